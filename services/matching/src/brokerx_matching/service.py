"""Process wiring of the matching service: shard consumers, then ops HTTP server and
heartbeat.

Start-up order matters for the recovery budget (SIGKILL → serving in ≤ 3 s with 100k
resting orders, docs/performance.md): the shard manager starts first, on the few
libraries the hot path needs (asyncpg, redis, pydantic); the ops side — uvicorn,
starlette and the SQLAlchemy engine behind the shared health check — is imported and
started only once the first shards are recovered. Importing it first cost more than
rebuilding the books. Until then `/health` does not answer, which is the truth: the
process does not serve yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
from collections.abc import Callable
from typing import Any

from brokerx_core.observability.logging import configure_logging, get_logger
from brokerx_core.redis import create_redis
from brokerx_matching.settings import MatchingSettings
from brokerx_matching.shards import ShardManager

log = get_logger(__name__)

# Start the ops side anyway if recovery takes longer than this (a huge book).
OPS_START_DEADLINE_SECONDS = 30.0


class MatchingService:
    """The whole service, startable in-process (tests, benchmarks) or by `run`."""

    def __init__(self, settings: MatchingSettings, stop: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or asyncio.Event()
        self.redis = create_redis(settings)
        self.shards = ShardManager(settings, self.redis, self.stop)
        self._engine: Any = None  # SQLAlchemy engine of the health check (created late)
        self.started = asyncio.Event()  # the ops side is up (after the first recoveries)

    async def health(self) -> tuple[int, dict[str, Any]]:
        from brokerx_core.observability.health import check_database, check_redis, run_checks

        status, body = await run_checks(
            {
                "database": lambda: check_database(self._engine),
                "redis": lambda: check_redis(self.redis),
            }
        )
        # Owning no shard is healthy: that is a hot standby.
        body["shards"] = {
            "owned": self.shards.owned_shards,
            "serving": self.shards.serving_shards,
            "total": self.settings.matching_shards,
        }
        return status, body

    async def serve(self) -> None:
        """Run until `stop` is set."""
        shards = asyncio.create_task(self.shards.run(), name="shard-manager")
        ops: _Ops | None = None
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shards.first_round.wait(), OPS_START_DEADLINE_SECONDS)
            if not shards.done():
                # Imported in a thread: the shards keep serving while it loads.
                await asyncio.to_thread(_import_ops_modules)
                ops = await _Ops.start(self)
                self.started.set()
            await shards
        finally:
            log.info("matching_stopping")
            self.stop.set()
            await asyncio.gather(shards, return_exceptions=True)
            if ops is not None:
                await ops.stop(self)
            await self.redis.aclose()


def _import_ops_modules() -> None:
    for name in (
        "brokerx_core.db",
        "brokerx_core.observability.health",
        "brokerx_core.observability.metrics",
        "brokerx_core.observability.ops_server",
    ):
        importlib.import_module(name)


class _Ops:
    """`/health`, `/metrics`, the heartbeat and process metrics."""

    def __init__(self, server: Any, task: asyncio.Task[Any], heartbeat: Any, collectors: Any):
        self.server = server
        self.task = task
        self.heartbeat = heartbeat
        self.collectors = collectors

    @classmethod
    async def start(cls, service: MatchingService) -> _Ops:
        from brokerx_core.db import create_engine
        from brokerx_core.observability.health import Heartbeat
        from brokerx_core.observability.metrics import register_process_metrics
        from brokerx_core.observability.ops_server import create_ops_app, create_ops_server

        settings = service.settings
        service._engine = create_engine(settings, pool_size=1)
        try:
            collectors = register_process_metrics("matching", service._engine)
        except ValueError:  # a second service in this process (tests): already exported
            collectors = []
        app = create_ops_app(service.health)
        server = create_ops_server(app, settings.ops_host, settings.ops_port)
        task = asyncio.create_task(server.serve(), name="ops-server")
        heartbeat = Heartbeat(
            service.redis,
            "matching",
            interval=settings.heartbeat_interval_seconds,
            ttl=settings.heartbeat_ttl_seconds,
        )
        heartbeat.start()
        log.info("matching_started", port=settings.ops_port, shards=service.shards.owned_shards)
        return cls(server, task, heartbeat, collectors)

    async def stop(self, service: MatchingService) -> None:
        from brokerx_core.observability.metrics import unregister

        await self.heartbeat.stop()
        self.server.should_exit = True
        await self.task
        unregister(self.collectors)
        await service._engine.dispose()


async def run(
    settings: MatchingSettings,
    stop: asyncio.Event | None = None,
    *,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run until `stop` is set or the process receives SIGINT/SIGTERM; `on_started` is
    called once the first shards serve and the ops side is up."""
    configure_logging("matching", settings.log_level, json=settings.log_json)
    service = MatchingService(settings, stop)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, service.stop.set)
    hook = asyncio.create_task(_when_started(service, on_started)) if on_started else None
    try:
        await service.serve()
    finally:
        if hook is not None:
            hook.cancel()


async def _when_started(service: MatchingService, callback: Callable[[], None]) -> None:
    await service.started.wait()
    callback()
