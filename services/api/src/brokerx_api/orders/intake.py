"""The process's `IntakeBatcher` (group commit of POST /orders), owned by the orders router.

`include_router` nests this lifespan inside the app's, so Redis is already open. Each
flusher owns one asyncpg connection (prepared statements reused, no pool round trips).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI

from brokerx_api.orders.service import trading_rules
from brokerx_api.settings import ApiSettings
from brokerx_core.intake.batcher import IntakeBatcher


def intake_connector(settings: ApiSettings) -> Any:
    """A factory of intake connections (a coroutine function, as the batcher expects)."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            settings.libpq_url,
            timeout=5.0,
            server_settings={
                "application_name": f"{settings.service_name}-intake",
                # Every statement here finds rows by key. The connection lives as long
                # as the api, and PostgreSQL keeps a generic plan per statement after
                # five calls: one made while a table was small scans it (`id = ANY`, a
                # replace's lookup by id), and kept on scanning as the table grew, full
                # of dead row versions. No scan, then, as on the engine's connections.
                "enable_seqscan": "off",
            },
        )

    return connect


@asynccontextmanager
async def intake_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    batcher = IntakeBatcher(
        intake_connector(settings),
        app.state.redis,
        lambda: trading_rules(app.state.settings),
        max_batch=settings.intake_batch_max,
        connections=settings.intake_connections,
    )
    await batcher.start()
    app.state.intake = batcher
    try:
        yield
    finally:
        await batcher.stop()
