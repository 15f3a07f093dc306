"""Prometheus metrics of the matching service (module-level: registered once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRADES = Counter("brokerx_trades", "Trades executed by the engine")
COMMANDS = Counter(
    "brokerx_engine_commands",
    "Order commands consumed, by type and outcome"
    " (applied, rejected, skipped, duplicate, misrouted, dead_letter)",
    ["type", "outcome"],
)
BATCH_SECONDS = Histogram(
    "brokerx_engine_batch_seconds",
    "Time to apply, commit, publish and acknowledge one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE = Histogram(
    "brokerx_engine_batch_size",
    "Stream entries per batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
INTAKE_TO_FILL = Histogram(
    "brokerx_intake_to_fill_seconds",
    "From an order's creation at intake to the publication of its first fill"
    " (orders that fill on arrival; a resting order's wait is the market's, not ours)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STREAM_LAG = Gauge(
    "brokerx_stream_lag",
    "Entries a consumer group has not acknowledged yet (XINFO GROUPS lag + pending)",
    ["stream", "group"],
)
SHARDS_OWNED = Gauge("brokerx_shards_owned", "Shards whose advisory lock this process holds")
RECOVERY_SECONDS = Histogram(
    "brokerx_engine_recovery_seconds",
    "Time to rebuild a shard from PostgreSQL and re-apply its pending_new orders",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DEAD_LETTERS = Counter("brokerx_engine_dead_letters", "Stream entries sent to orders.dead")
