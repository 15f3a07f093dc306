"""The outbox relay puts back on the stream every command that was committed but never
reached the engine, leaves alone what the engine consumed, and outlives outages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from brokerx_core.commands import order_command, outbox_payload
from brokerx_core.db import create_sessionmaker
from brokerx_core.streams import order_stream_for
from brokerx_worker.jobs.outbox import outbox_relay, relay_pass
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.trading import Trader, create_trader, outbox_rows, stream_commands

pytestmark = pytest.mark.usefixtures("instruments")

SHARDS = 4  # MATCHING_SHARDS of the api under test (the default)


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00")


async def place(api: httpx.AsyncClient, trader: Trader, quantity: int = 1) -> str:
    response = await api.post(
        "/api/v1/orders",
        json={
            "symbol": "AAPL",
            "side": "buy",
            "type": "limit",
            "quantity": quantity,
            "limit_price": "190.00",
        },
        headers=trader.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def age_outbox(engine: AsyncEngine, seconds: int = 10) -> None:
    """Make every row (and its last publish) look `seconds` old."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox SET created_at = created_at - make_interval(secs => :s),"
                " published_at = published_at - make_interval(secs => :s)"
            ),
            {"s": seconds},
        )


async def run_pass(
    sessionmaker: async_sessionmaker[AsyncSession], redis: Redis, **kwargs: Any
) -> int:
    kwargs.setdefault("shards", SHARDS)
    return await relay_pass(sessionmaker, redis, republish_after_seconds=2.0, **kwargs)


async def test_a_command_lost_after_commit_is_republished_with_its_outbox_id(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    order_id = await place(api, trader)
    await redis.flushdb()  # the fast-path XADD is gone (Redis lost it)
    await age_outbox(engine)

    published = await run_pass(sessionmaker, redis)

    assert published == 1
    [row] = await outbox_rows(engine)
    [(stream, command)] = await stream_commands(redis)
    assert stream == row.stream
    assert command.type == "new_order"
    assert command.order_id == uuid.UUID(order_id)
    assert command.outbox_id == row.id
    assert row.published_at is not None
    assert row.attempts == 1


async def test_fresh_rows_are_left_to_the_fast_path(
    api: httpx.AsyncClient,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    await place(api, trader)
    await redis.flushdb()

    assert await run_pass(sessionmaker, redis) == 0
    assert await stream_commands(redis) == []


async def test_a_pass_with_nothing_left_behind_is_one_probe_whatever_the_order_count(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    for _ in range(5):
        await place(api, trader)  # fresh rows: the fast path's business
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await run_pass(sessionmaker, redis) == 0
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 1
    assert "SELECT EXISTS" in statements[0]
    assert "FOR UPDATE" not in statements[0]


async def test_a_row_is_republished_again_after_a_growing_delay(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    await place(api, trader)
    await redis.flushdb()
    await age_outbox(engine)

    assert await run_pass(sessionmaker, redis) == 1
    assert await run_pass(sessionmaker, redis) == 0  # just published
    await age_outbox(engine, 3)
    assert await run_pass(sessionmaker, redis) == 0  # after one attempt: 2 × 2 s
    await age_outbox(engine, 2)
    assert await run_pass(sessionmaker, redis) == 1
    await age_outbox(engine, 7)
    assert await run_pass(sessionmaker, redis) == 0  # after two attempts: 4 × 2 s
    await age_outbox(engine, 2)
    assert await run_pass(sessionmaker, redis) == 1

    [row] = await outbox_rows(engine)
    assert row.attempts == 3
    assert len(await stream_commands(redis)) == 3


async def test_rows_the_engine_consumed_are_not_republished(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    await place(api, trader)
    await redis.flushdb()
    await age_outbox(engine)
    async with engine.begin() as conn:  # what the engine does when it applies the command
        await conn.execute(text("DELETE FROM outbox"))

    assert await run_pass(sessionmaker, redis) == 0
    assert await stream_commands(redis) == []


async def test_oldest_rows_go_first_in_bounded_batches(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    trader: Trader,
) -> None:
    orders = [await place(api, trader, quantity=q) for q in (1, 2, 3)]
    await redis.flushdb()
    await age_outbox(engine)

    assert await run_pass(sessionmaker, redis, batch_size=2) == 2
    assert [str(c.order_id) for _, c in await stream_commands(redis)] == orders[:2]
    assert await run_pass(sessionmaker, redis, batch_size=2) == 1
    assert sorted(str(c.order_id) for _, c in await stream_commands(redis)) == sorted(orders)


async def test_commands_written_under_another_shard_count_go_to_their_current_shard(
    engine: AsyncEngine, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """MATCHING_SHARDS was lowered (or changed) after these rows were written: the stream
    they name has no engine any more, so the relay routes by symbol under the current
    count. A cancel or replace sent to the old stream would never be applied."""
    ts = datetime.now(UTC)
    cancel = order_command("cancel", uuid.uuid4(), "MSFT", 1, ts=ts)
    replace = order_command(
        "replace", uuid.uuid4(), "AAPL", 2, ts=ts, new_quantity=5, new_limit_price=Decimal("191.00")
    )
    # orders.5 existed while MATCHING_SHARDS was 8 (or 6); AAPL was on orders.2 with 5.
    written = [(cancel, "orders.5"), (replace, "orders.2")]
    async with engine.begin() as conn:
        for command, stream in written:
            await conn.execute(
                text("INSERT INTO outbox (stream, payload) VALUES (:s, :p)"),
                {"s": stream, "p": outbox_payload(command)},
            )
    await age_outbox(engine)

    assert await run_pass(sessionmaker, redis, shards=SHARDS) == 2

    rows = await outbox_rows(engine)
    expected = {
        row.id: (order_stream_for(command.symbol, SHARDS), command.order_id)
        for row, (command, _stream) in zip(rows, written, strict=True)
    }
    assert {v[0] for v in expected.values()} == {"orders.3", "orders.0"}
    sent = await stream_commands(redis, shards=8)  # every stream either count names
    assert {c.outbox_id: (stream, c.order_id) for stream, c in sent} == expected
    assert len(sent) == 2
    assert await redis.exists("orders.5", "orders.2") == 0
    assert all(row.attempts == 1 for row in rows)


@pytest.fixture
async def relay_ctx(
    servers: ServerUrls,
    database_url: str,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[dict[str, Any]]:
    """A worker ctx running the relay loop (fast cadence, rows due at once)."""
    settings = WorkerSettings(
        **settings_overrides(servers, database_url),
        outbox_relay_interval_seconds=0.05,
        outbox_republish_after_seconds=0,
    )
    ctx: dict[str, Any] = {"settings": settings, "sessionmaker": sessionmaker, "streams": redis}
    task = asyncio.create_task(outbox_relay(ctx))
    ctx["task"] = task
    yield ctx
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def relay_errors() -> float:
    return REGISTRY.get_sample_value("brokerx_outbox_relay_errors_total") or 0.0


async def test_the_relay_outlives_a_redis_outage(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    trader: Trader,
    relay_ctx: dict[str, Any],
) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    relay_ctx["streams"] = dead
    errors = await relay_errors()
    try:
        order_id = await place(api, trader)
        await redis.flushdb()

        await eventually(relay_errors, lambda n: n >= errors + 2, message="relay failures")
        assert not relay_ctx["task"].done()
        [row] = await outbox_rows(engine)
        assert row.attempts == 0  # nothing stamped while Redis refused the XADDs
    finally:
        relay_ctx["streams"] = redis
        await dead.aclose()

    entries = await eventually(lambda: stream_commands(redis), message="command republished")
    assert str(entries[0][1].order_id) == order_id


async def test_the_relay_outlives_a_database_outage(
    api: httpx.AsyncClient,
    redis: Redis,
    trader: Trader,
    sessionmaker: async_sessionmaker[AsyncSession],
    relay_ctx: dict[str, Any],
) -> None:
    broken = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    relay_ctx["sessionmaker"] = create_sessionmaker(broken)
    errors = await relay_errors()
    try:
        order_id = await place(api, trader)
        await redis.flushdb()

        await eventually(relay_errors, lambda n: n >= errors + 2, message="relay failures")
        assert not relay_ctx["task"].done()
    finally:
        relay_ctx["sessionmaker"] = sessionmaker
        await broken.dispose()

    entries = await eventually(lambda: stream_commands(redis), message="command republished")
    assert str(entries[0][1].order_id) == order_id
