"""`create_app()`: the FastAPI application and the resources its lifespan owns."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from arq import create_pool
from arq.connections import RedisSettings
from fastapi import FastAPI

from brokerx_api import health
from brokerx_api.accounts.endpoints import router as accounts_router
from brokerx_api.auth.endpoints import router as auth_router
from brokerx_api.clients.endpoints import router as clients_router
from brokerx_api.errors import install_error_handlers
from brokerx_api.marketdata.endpoints import router as marketdata_router
from brokerx_api.metrics import router as metrics_router
from brokerx_api.middleware import RequestIdMiddleware
from brokerx_api.openapi import install_openapi
from brokerx_api.order_fast_path import OrderFastPath
from brokerx_api.orders.endpoints import router as orders_router
from brokerx_api.request_metrics import instrument
from brokerx_api.settings import ApiSettings
from brokerx_api.stream.endpoints import router as stream_router
from brokerx_api.workers import exit_with_master
from brokerx_core.db import create_engine, create_sessionmaker
from brokerx_core.gc_tuning import freeze_startup_heap, tune_gc
from brokerx_core.observability.health import Heartbeat
from brokerx_core.observability.logging import configure_logging
from brokerx_core.observability.metrics import ProcessMetrics
from brokerx_core.observability.multiprocess import retire_current_process
from brokerx_core.redis import create_redis

API_PREFIX = "/api/v1"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    engine = create_engine(settings)
    redis = create_redis(settings)
    arq = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.redis = redis
    app.state.arq = arq
    # Per process: with API_WORKERS > 1 every worker runs this lifespan with its own
    # engine, Redis, arq pool and stream readers.
    process_metrics = ProcessMetrics("api", engine)
    process_metrics.start()
    app.state.process_metrics = process_metrics
    master_watch = asyncio.create_task(exit_with_master(), name="exit-with-master")
    heartbeat = Heartbeat(
        redis,
        "api",
        interval=settings.heartbeat_interval_seconds,
        ttl=settings.heartbeat_ttl_seconds,
    )
    heartbeat.start()
    for hook in app.state.startup_hooks:
        await hook(app)
    # Fewer, cheaper collections; the start-up heap out of their scans (see the module).
    tune_gc()
    freeze_startup_heap()
    try:
        yield
    finally:
        for hook in reversed(app.state.shutdown_hooks):
            await hook(app)
        await heartbeat.stop()
        master_watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await master_watch
        await process_metrics.stop()
        await arq.aclose()
        await redis.aclose()
        await engine.dispose()
        retire_current_process()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the api. Resources (engine, Redis, arq pool) are created by the lifespan."""
    settings = settings or ApiSettings()
    configure_logging("api", settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="BrokerX API",
        version="1.0.0",
        summary="Online brokerage for retail investors",
        lifespan=lifespan,
        # Metrics are Prometheus's (below) and nothing exports OpenTelemetry: with it off,
        # FastAPI does not look for an OTel provider (environment lookups) per request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    # The wall clock, set rather than defaulted: every token check reads it, and a
    # missing attribute on app.state costs an exception (tests replace it, auth/clock.py).
    app.state.clock = time.time
    # Domain packages register background tasks (stream readers) here.
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []
    install_error_handlers(app)
    install_openapi(app)
    # Added first, so innermost: inside the request ids, metrics and body limit.
    app.add_middleware(OrderFastPath, prefix=API_PREFIX)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(metrics_router)
    # Routes are matched in order: the order routes, the hottest, go first.
    for router in (
        orders_router,
        clients_router,
        auth_router,
        accounts_router,
        marketdata_router,
        stream_router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    # Request metrics only: `/metrics` itself is `brokerx_api.metrics` (multiprocess-aware).
    instrument(app, excluded_handlers=["/metrics"])
    return app
