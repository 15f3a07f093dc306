"""Process wiring of the worker: arq worker, ops server, heartbeat, background tasks.

The ops server, heartbeat and background tasks live for the whole process; the arq
worker runs inside them and is restarted when Redis goes away (arq's poll loop raises
on a lost connection), so a Redis restart never takes the worker process down.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokerx_core.db import create_sessionmaker
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
from brokerx_worker import backup, registry
from brokerx_worker.database import worker_engine
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)


ARQ_RESTART_DELAY_SECONDS = 1.0


async def start_resources(settings: WorkerSettings) -> dict[str, Any]:
    """Create clients once and put them in ctx; start the ops server and background tasks."""
    ctx: dict[str, Any] = {"settings": settings}
    engine = worker_engine(settings)
    ctx["engine"] = engine
    ctx["sessionmaker"] = create_sessionmaker(engine)
    ctx["streams"] = create_redis(settings)
    ctx["collectors"] = register_process_metrics("worker", engine)

    async def health() -> tuple[int, dict[str, object]]:
        return await run_checks(
            {
                "database": lambda: check_database(engine),
                "redis": lambda: check_redis(ctx["streams"]),
            }
        )

    server = create_ops_server(create_ops_app(health), settings.ops_host, settings.ops_port)
    ctx["ops_server"] = server
    ctx["ops_task"] = asyncio.create_task(server.serve(), name="ops-server")
    heartbeat = Heartbeat(
        ctx["streams"],
        "worker",
        interval=settings.heartbeat_interval_seconds,
        ttl=settings.heartbeat_ttl_seconds,
    )
    heartbeat.start()
    ctx["heartbeat"] = heartbeat
    ctx["background"] = [
        asyncio.create_task(task(ctx), name=getattr(task, "__name__", "task"))
        for task in registry.BACKGROUND_TASKS
    ]
    log.info("worker_started", port=settings.ops_port)
    return ctx


async def stop_resources(ctx: dict[str, Any]) -> None:
    """Stop background tasks, the ops server and release clients."""
    for task in ctx.get("background", []):
        task.cancel()
    for task in ctx.get("background", []):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if "heartbeat" in ctx:
        await ctx["heartbeat"].stop()
    if "ops_server" in ctx:
        ctx["ops_server"].should_exit = True
        await ctx["ops_task"]
    if "collectors" in ctx:
        unregister(ctx["collectors"])
    if "streams" in ctx:
        await ctx["streams"].aclose()
    if "engine" in ctx:
        await ctx["engine"].dispose()
    log.info("worker_stopped")


def create_worker(settings: WorkerSettings, ctx: dict[str, Any]) -> Worker:
    """An arq Worker with every registered job and cron job, sharing `ctx`."""
    return Worker(
        functions=registry.FUNCTIONS,
        cron_jobs=[*registry.CRON_JOBS, backup.backup_cron_job(settings.backup_cron)],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        ctx=ctx,
        max_jobs=20,
        job_timeout=600,
        keep_result=60,
        handle_signals=True,
    )


async def run(settings: WorkerSettings) -> None:
    """Run the worker until SIGINT/SIGTERM (arq's handler cancels this task)."""
    configure_logging("worker", settings.log_level, json=settings.log_json)
    ctx = await start_resources(settings)
    try:
        while True:
            worker = create_worker(settings, ctx)
            try:
                await worker.async_run()
                return
            except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError) as exc:
                # Redis went away under arq: keep the process (health says redis: false)
                # and start a fresh arq worker once Redis answers again.
                log.warning("arq_redis_lost", error=str(exc) or type(exc).__name__)
            finally:
                with contextlib.suppress(Exception):
                    await worker.close()
            await asyncio.sleep(ARQ_RESTART_DELAY_SECONDS)
    finally:
        await stop_resources(ctx)
