"""Redis client factory (transport only: streams, arq queues, counters, cached quotes)."""

from __future__ import annotations

from redis.asyncio import Redis

from brokerx_core.settings import BrokerXSettings

# Above every XREADGROUP BLOCK used in the code base (those stay ≤ 5 s).
SOCKET_TIMEOUT_SECONDS = 15.0


def create_redis(settings: BrokerXSettings, *, decode_responses: bool = False) -> Redis:
    """A pooled asyncio Redis client for `settings.redis_url`."""
    client: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=decode_responses,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=3.0,
        health_check_interval=30,
    )
    return client
