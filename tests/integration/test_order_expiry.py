"""DAY-order expiry: at the session close every open DAY order gets an `expire` command
through the outbox; GTC and finished orders do not, and nothing expires without a close."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_worker.jobs.orders import expire_day_orders
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.servers import ServerUrls
from tests.support.trading import Trader, create_trader, finish_order, outbox_rows, stream_commands

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00")


async def place(api: httpx.AsyncClient, trader: Trader, time_in_force: str) -> uuid.UUID:
    response = await api.post(
        "/api/v1/orders",
        json={
            "symbol": "AAPL",
            "side": "buy",
            "type": "limit",
            "quantity": 1,
            "limit_price": "190.00",
            "time_in_force": time_in_force,
        },
        headers=trader.headers,
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


def worker_ctx(
    servers: ServerUrls,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    session_close: str | None,
) -> dict[str, Any]:
    settings = WorkerSettings(
        **settings_overrides(servers, database_url), session_close=session_close
    )
    return {"settings": settings, "sessionmaker": sessionmaker, "streams": redis}


async def test_open_day_orders_get_an_expire_command_at_the_close(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    servers: ServerUrls,
    database_url: str,
    trader: Trader,
) -> None:
    pending = await place(api, trader, "day")
    resting = await place(api, trader, "day")
    async with engine.begin() as conn:  # the engine accepted this one
        await conn.execute(
            text("UPDATE client_order SET status = 'new' WHERE id = :id"), {"id": resting}
        )
    await place(api, trader, "gtc")
    finished = await place(api, trader, "day")
    await finish_order(engine, finished, "canceled")
    late = await place(api, trader, "day")
    # The session closes 30 minutes from now; the worker runs an hour from now.
    close = datetime.now(UTC) + timedelta(minutes=30)
    async with engine.begin() as conn:  # placed after that close (next session)
        await conn.execute(
            text("UPDATE client_order SET created_at = :t WHERE id = :id"),
            {"t": close + timedelta(minutes=5), "id": late},
        )
    await redis.flushdb()
    ctx = worker_ctx(servers, database_url, sessionmaker, redis, f"{close:%H:%M}")

    written = await expire_day_orders(ctx, now=close + timedelta(minutes=30))

    assert written == 2
    commands = [c for _, c in await stream_commands(redis)]
    assert {c.order_id for c in commands} == {pending, resting}
    assert {c.type for c in commands} == {"expire"}
    assert all(c.version == 1 and c.outbox_id is not None for c in commands)
    assert all(c.correlation_id and c.correlation_id.startswith("day-expiry-") for c in commands)
    expire_rows = [r for r in await outbox_rows(engine) if '"expire"' in r.payload]
    assert sorted(r.id for r in expire_rows) == sorted(c.outbox_id for c in commands)


async def test_each_close_is_handled_once(
    api: httpx.AsyncClient,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    servers: ServerUrls,
    database_url: str,
    trader: Trader,
) -> None:
    await place(api, trader, "day")
    close = datetime.now(UTC) + timedelta(minutes=30)
    ctx = worker_ctx(servers, database_url, sessionmaker, redis, f"{close:%H:%M}")
    later = close + timedelta(minutes=30)

    first = await expire_day_orders(ctx, now=later)
    again = await expire_day_orders(ctx, now=later + timedelta(minutes=1))

    assert (first, again) == (1, 0)


async def test_nothing_expires_without_a_session_close(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    servers: ServerUrls,
    database_url: str,
    trader: Trader,
) -> None:
    await place(api, trader, "day")
    ctx = worker_ctx(servers, database_url, sessionmaker, redis, None)

    written = await expire_day_orders(ctx, now=datetime.now(UTC) + timedelta(days=1))

    assert written == 0
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order"]
    assert len(await outbox_rows(engine)) == 1
