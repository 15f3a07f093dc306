"""Background checks of the live stream: platform status and session liveness.

- Status: `degraded` while the matching engine's heartbeat is missing, a reader cannot
  reach Redis, or a reader lags more than `stream_lag_degraded_seconds`; `ok` otherwise.
  Clients get a `status` message on every change (and the current one after auth).
- Sessions: a connection authenticated once must not outlive its session (logout,
  refresh-token reuse, suspension): live sessions are re-checked periodically and the
  connections of a dead one are closed with 4401. The same sweep closes connections whose
  access token expired (each has its own timer for that, limits.py: this is the backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from brokerx_api.stream.connection import Connection
from brokerx_api.stream.hub import Hub
from brokerx_api.stream.readers import StreamReader
from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.observability.health import check_heartbeat
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
Level = Literal["ok", "degraded"]


async def platform_status(
    redis: Redis, readers: Sequence[StreamReader], lag_limit: float
) -> tuple[Level, str | None]:
    """(level, reason) as clients should see it now."""
    try:
        engine_alive = await asyncio.wait_for(check_heartbeat(redis, "matching"), 2.0)
    except (RedisError, OSError, TimeoutError):
        return "degraded", "redis_unavailable"
    if not all(reader.healthy for reader in readers):
        return "degraded", "redis_unavailable"
    if not engine_alive:
        return "degraded", "matching_unavailable"
    if any(reader.lag_seconds > lag_limit for reader in readers):
        return "degraded", "stream_lag"
    return "ok", None


class Periodic:
    """Runs `step` every `interval` seconds in the background; a failing step is logged."""

    def __init__(self, name: str, interval: float, step: Callable[[], Awaitable[None]]) -> None:
        self._name = name
        self._interval = interval
        self._step = step
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self._name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            raise_if_cancelled()
            try:
                await self._step()
            except Exception:
                log.exception("stream_monitor_failed", monitor=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def status_step(
    hub: Hub, redis: Redis, readers: Sequence[StreamReader], lag_limit: float
) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        level, reason = await platform_status(redis, readers, lag_limit)
        if level != hub.status_level:
            log.info("stream_status_changed", level=level, reason=reason)
        hub.set_status(level, reason)

    return step


def session_step(
    hub: Hub, is_live: Callable[[Connection], Awaitable[bool]], clock: Callable[[], float]
) -> Callable[[], Awaitable[None]]:
    """Close (4401) the connections whose access token expired by `clock` (epoch seconds)
    or whose session is no longer live (one check per session)."""

    async def step() -> None:
        now = clock()
        by_session: dict[uuid.UUID, list[Connection]] = {}
        for conn in list(hub.connections):
            if conn.token_expires_at <= now:
                conn.close(CLOSE_UNAUTHORIZED)
                continue
            by_session.setdefault(conn.session_id, []).append(conn)
        for conns in by_session.values():
            try:
                live = await is_live(conns[0])
            except Exception as exc:  # an outage must not log everyone out
                log.warning("stream_session_check_failed", error=str(exc))
                continue
            if not live:
                for conn in conns:
                    conn.close(CLOSE_UNAUTHORIZED)

    return step
