"""DAY-order expiry: at the session close every open DAY order gets an `expire` command
through the outbox; GTC and finished orders do not, and nothing expires without a close.
An order whose intake straddled the close (checked before it, committed after the
first pass, or stamped after it) still expires with its session."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_worker.jobs.orders import SETTLE, expire_day_orders
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support import orders_sql
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
    session_open: str | None = None,
) -> dict[str, Any]:
    settings = WorkerSettings(
        **settings_overrides(servers, database_url),
        session_close=session_close,
        session_open=session_open,
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
    # The session closes 30 minutes from now and opens again 5 minutes later; the worker
    # runs an hour from now.
    close = datetime.now(UTC) + timedelta(minutes=30)
    reopen = close + timedelta(minutes=5)
    async with engine.begin() as conn:  # placed after that close (next session)
        await conn.execute(
            text("UPDATE client_order SET created_at = :t WHERE id = :id"),
            {"t": reopen.replace(second=0, microsecond=0), "id": late},
        )
    await redis.flushdb()
    ctx = worker_ctx(
        servers, database_url, sessionmaker, redis, f"{close:%H:%M}", f"{reopen:%H:%M}"
    )

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


async def expired_ids(redis: Redis) -> list[uuid.UUID]:
    return [c.order_id for _, c in await stream_commands(redis) if c.type == "expire"]


async def test_an_order_committed_after_the_first_pass_is_expired_by_the_last(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    servers: ServerUrls,
    database_url: str,
    trader: Trader,
) -> None:
    """The race of an intake that passed the hours check just before the close: its
    order's created_at is before the close, but it commits after the job's first query."""
    close = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=30)
    ctx = worker_ctx(servers, database_url, sessionmaker, redis, f"{close:%H:%M}")
    early = await place(api, trader, "day")
    async with engine.connect() as conn, conn.begin() as intake:
        # The intake's transaction: started (created_at = now(), before the close) ...
        straddling = await orders_sql.place_order(
            conn, trader.account_id, "AAPL", "buy", 1, limit_price="190.00"
        )
        assert straddling is not None
        first = await expire_day_orders(ctx, now=close + timedelta(seconds=1))
        # ... and committed only after the first pass had looked.
        await intake.commit()
    await finish_order(engine, early, "expired")  # the engine applied the first pass
    waiting = await expire_day_orders(ctx, now=close + timedelta(minutes=1))
    last = await expire_day_orders(ctx, now=close + SETTLE + timedelta(seconds=1))
    done = await expire_day_orders(ctx, now=close + SETTLE + timedelta(minutes=1))

    assert (first, waiting, last, done) == (1, 0, 1, 0)
    assert await expired_ids(redis) == [early, straddling.order_id]


async def test_an_order_stamped_between_the_close_and_the_next_open_expires_with_its_session(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    servers: ServerUrls,
    database_url: str,
    trader: Trader,
) -> None:
    """Nothing is accepted while the market is closed, so an order created after the
    close (its hours checked a moment before, or on an api clock behind the database's)
    belongs to the closing session; one created at the next open does not."""
    close = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=30)
    reopen = close + timedelta(hours=1)
    stamps = {"stamped_late": close + timedelta(seconds=2), "next_session": reopen}
    placed = {name: await place(api, trader, "day") for name in stamps}
    async with engine.begin() as conn:
        for name, stamp in stamps.items():
            await conn.execute(
                text("UPDATE client_order SET created_at = :t WHERE id = :id"),
                {"t": stamp, "id": placed[name]},
            )
    ctx = worker_ctx(
        servers, database_url, sessionmaker, redis, f"{close:%H:%M}", f"{reopen:%H:%M}"
    )

    written = await expire_day_orders(ctx, now=reopen + timedelta(minutes=5))

    assert written == 1
    assert await expired_ids(redis) == [placed["stamped_late"]]
