"""Health checks and service heartbeats.

Each service refreshes `brokerx:heartbeat:<service>` (TTL `heartbeat_ttl_seconds`) while
it works; a peer whose key is gone is reported down. `/health` runs its checks
concurrently with a short timeout each and answers 200 only when all are true.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.observability.logging import get_logger

HEARTBEAT_KEY = "brokerx:heartbeat:{service}"
CHECK_TIMEOUT_SECONDS = 3.0

log = get_logger(__name__)

Check = Callable[[], Awaitable[bool]]


async def check_database(engine: AsyncEngine) -> bool:
    """True when PostgreSQL answers `SELECT 1`."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return True


async def check_redis(redis: Redis) -> bool:
    """True when Redis answers PING."""
    return bool(await redis.ping())


async def check_heartbeat(redis: Redis, service: str) -> bool:
    """True when `service` refreshed its heartbeat within its TTL."""
    return bool(await redis.exists(HEARTBEAT_KEY.format(service=service)))


async def _guarded(check: Check) -> bool:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception:  # a failing dependency is a false check, never a crash
        return False


async def run_checks(checks: Mapping[str, Check]) -> tuple[int, dict[str, Any]]:
    """Run checks concurrently; (200|503, body as API.md's /health describes)."""
    names = list(checks)
    results = await asyncio.gather(*(_guarded(checks[name]) for name in names))
    outcome = dict(zip(names, results, strict=True))
    healthy = all(results)
    body = {
        "status": "ok" if healthy else "degraded",
        "timestamp": datetime.now(UTC).isoformat(),
        "checks": outcome,
    }
    return (200 if healthy else 503), body


class Heartbeat:
    """Refreshes a service's heartbeat key in the background until stopped."""

    def __init__(
        self,
        redis: Redis,
        service: str,
        *,
        interval: float,
        ttl: int,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        self._redis = redis
        self._key = HEARTBEAT_KEY.format(service=service)
        self._interval = interval
        self._ttl = ttl
        self._alive = alive or (lambda: True)
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        while True:
            if self._alive():
                try:
                    await self._redis.set(self._key, str(time.time()), ex=self._ttl)
                except Exception as exc:  # Redis down: keep trying, health shows it
                    raise_if_cancelled()  # unless the error was our cancel, lost by redis-py
                    log.warning("heartbeat_failed", key=self._key, error=str(exc))
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Start beating (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._beat(), name=f"heartbeat:{self._key}")

    async def stop(self) -> None:
        """Stop beating and remove the key so peers see the service gone at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._redis.delete(self._key)
