"""Settings of the matching process."""

from __future__ import annotations

from brokerx_core.settings import BrokerXSettings


class MatchingSettings(BrokerXSettings):
    service_name: str = "matching"
    ops_host: str = "127.0.0.1"
    ops_port: int = 8001
    consumer_name: str | None = None  # defaults to host:pid
    batch_size: int = 500
    block_ms: int = 1000
    max_deliveries: int = 5
    claim_idle_ms: int = 10_000
    shard_poll_seconds: float = 1.0
    db_pool_size: int = 8
