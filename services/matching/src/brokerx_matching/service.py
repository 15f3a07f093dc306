"""Process wiring of the matching service: ops HTTP server, heartbeat, shard consumers."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from brokerx_core.db import create_engine
from brokerx_core.observability.health import (
    Heartbeat,
    check_database,
    check_redis,
    run_checks,
)
from brokerx_core.observability.logging import configure_logging, get_logger
from brokerx_core.observability.metrics import register_process_metrics, unregister
from brokerx_core.observability.ops_server import create_ops_app, create_ops_server
from brokerx_core.redis import create_redis
from brokerx_matching.settings import MatchingSettings

log = get_logger(__name__)


async def run(settings: MatchingSettings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set or the process receives SIGINT/SIGTERM."""
    configure_logging("matching", settings.log_level, json=settings.log_json)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    engine = create_engine(settings)
    redis = create_redis(settings)
    collectors = register_process_metrics("matching", engine)

    async def health() -> tuple[int, dict[str, object]]:
        return await run_checks(
            {
                "database": lambda: check_database(engine),
                "redis": lambda: check_redis(redis),
            }
        )

    server = create_ops_server(create_ops_app(health), settings.ops_host, settings.ops_port)
    heartbeat = Heartbeat(
        redis,
        "matching",
        interval=settings.heartbeat_interval_seconds,
        ttl=settings.heartbeat_ttl_seconds,
    )
    server_task = asyncio.create_task(server.serve(), name="ops-server")
    heartbeat.start()
    log.info("matching_started", port=settings.ops_port, shards=settings.matching_shards)
    try:
        await stop.wait()
    finally:
        log.info("matching_stopping")
        await heartbeat.stop()
        server.should_exit = True
        await server_task
        unregister(collectors)
        await redis.aclose()
        await engine.dispose()
