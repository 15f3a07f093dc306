"""Prometheus metrics of the live stream (one set per api process).

With several api workers (Prometheus multiprocess mode) `/metrics` merges the workers:
counters are summed, open connections are summed over live workers and the lag is the
worst live worker's (each worker runs its own stream readers).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WS_CONNECTIONS = Gauge(
    "brokerx_ws_connections",
    "Open WebSocket connections on /api/v1/stream",
    multiprocess_mode="livesum",
)
WS_MESSAGES_SENT = Counter(
    "brokerx_ws_messages_sent_total", "Messages written to WebSocket clients", ["type"]
)
# reason: `conflated` (a quote/book replaced by a newer one before it was sent),
# `overflow` (a trade discarded from a full market-data backlog),
# `disconnected` (messages discarded with a slow consumer's connection).
WS_MESSAGES_DROPPED = Counter(
    "brokerx_ws_messages_dropped_total", "Messages never sent to a WebSocket client", ["reason"]
)
STREAM_LAG = Gauge(
    "brokerx_stream_lag_seconds",
    "Now minus the timestamp of the last stream entry the api read (0 when caught up)",
    ["stream"],
    multiprocess_mode="livemax",
)
# limit: `connections` (a client's connection over WS_MAX_CONNECTIONS_PER_CLIENT, closed
# 4429), `subscriptions` (a subscribe/unsubscribe over the rate, answered `rate_limited`).
WS_LIMITED = Counter(
    "brokerx_ws_limited_total", "WebSocket connections and actions refused by a limit", ["limit"]
)
