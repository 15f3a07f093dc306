"""The live-stream service of one api process: hub, stream readers and monitors.

Started and stopped by the stream router's lifespan (merged into the app's lifespan by
`include_router`, so it runs after the app's engine and Redis exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from fastapi import FastAPI, Request

from brokerx_api.auth.clock import app_clock
from brokerx_api.auth.deps import session_account
from brokerx_api.settings import ApiSettings
from brokerx_api.stream.connection import Connection
from brokerx_api.stream.hub import Hub
from brokerx_api.stream.monitor import Periodic, session_step, status_step
from brokerx_api.stream.readers import StreamReader, execution_dispatcher, marketdata_dispatcher
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import EXECUTIONS_STREAM, MARKETDATA_STREAM

log = get_logger(__name__)

CLOSE_GOING_AWAY = 1001


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Tunables of the live stream. Tests may put their own on `app.state.stream_options`
    before the app starts."""

    queue_size: int = 1000
    lag_degraded_seconds: float = 5.0
    auth_timeout_seconds: float = 10.0
    status_interval_seconds: float = 1.0
    session_check_interval_seconds: float = 30.0
    close_timeout_seconds: float = 5.0
    read_block_ms: int = 2_000  # XREAD BLOCK of the readers (≤ 5 s)
    max_connections_per_client: int = 20
    subscription_burst: int = 20
    subscription_rate_per_second: float = 5.0

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> StreamOptions:
        return cls(
            queue_size=settings.ws_queue_size,
            lag_degraded_seconds=settings.stream_lag_degraded_seconds,
            max_connections_per_client=settings.ws_max_connections_per_client,
            subscription_burst=settings.ws_subscription_burst,
            subscription_rate_per_second=settings.ws_subscription_rate_per_second,
        )


class StreamService:
    """Everything the `/api/v1/stream` endpoint needs, owned by one app."""

    def __init__(self, app: FastAPI, options: StreamOptions) -> None:
        self.app = app
        self.options = options
        self.hub = Hub()
        redis = app.state.redis
        self.readers = [
            StreamReader(
                redis,
                EXECUTIONS_STREAM,
                execution_dispatcher(self.hub),
                block_ms=options.read_block_ms,
            ),
            StreamReader(
                redis,
                MARKETDATA_STREAM,
                marketdata_dispatcher(self.hub),
                block_ms=options.read_block_ms,
            ),
        ]
        self._check_status = status_step(
            self.hub, redis, self.readers, options.lag_degraded_seconds
        )
        self._monitors = [
            Periodic("stream-status", options.status_interval_seconds, self._check_status),
            Periodic(
                "stream-sessions",
                options.session_check_interval_seconds,
                session_step(self.hub, self._session_is_live, lambda: app_clock(app)()),
            ),
        ]

    async def _session_is_live(self, conn: Connection) -> bool:
        # session_account only reads `.app` from its request: a WebSocket serves as well.
        request = cast(Request, conn.websocket)
        # Straight to Redis/PostgreSQL: an open socket learns of a revocation at the next check.
        return (
            await session_account(request, conn.client_id, conn.session_id, memo=False) is not None
        )

    async def start(self) -> None:
        """Pin the readers at the streams' tails, learn the current status, start the loops."""
        for reader in self.readers:
            await reader.start()
        try:
            await self._check_status()
        except Exception:  # startup must not fail because Redis is briefly away
            log.exception("stream_status_check_failed")
        for monitor in self._monitors:
            monitor.start()
        log.info("stream_started", status=self.hub.status_level)

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop the background tasks."""
        for conn in list(self.hub.connections):
            conn.close(CLOSE_GOING_AWAY)
        for monitor in self._monitors:
            await monitor.stop()
        for reader in self.readers:
            await reader.stop()
