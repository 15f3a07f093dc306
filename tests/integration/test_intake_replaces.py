"""Replaces by group commit (`IntakeBatcher.replace`, `intake_replace_orders`): each
request gets the outcome it would get alone, and the batch call never waits for one
order's lock while holding another's. Real PostgreSQL and Redis; no engine runs, so
orders stay `pending_new` with their reservations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core import intake
from brokerx_core.db.base import utcnow
from brokerx_core.intake.amend import Amended
from brokerx_core.intake.batcher import IntakeBatcher
from brokerx_core.intake.pretrade import Amendment
from brokerx_core.intake.records import OrderRecord
from brokerx_core.intake.replaces import REPLACE_MANY_SQL, ReplaceRequest, replace_orders
from tests.support.intake import RULES, new_account, order, running_batcher
from tests.support.polling import eventually
from tests.support.trading import (
    account_state,
    count_rows,
    finish_order,
    position_state,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def batcher(engine: AsyncEngine, redis: Redis) -> AsyncIterator[IntakeBatcher]:
    async for running in running_batcher(engine, redis, connections=1):
        yield running


async def placed(
    batcher: IntakeBatcher, account: uuid.UUID, *args: Any, **kwargs: Any
) -> OrderRecord:
    return (await batcher.place(account, order(*args, **kwargs))).order


def replace(
    account: uuid.UUID, target: OrderRecord | uuid.UUID, version: int = 1, **terms: Any
) -> ReplaceRequest:
    order_id = target if isinstance(target, uuid.UUID) else target.id
    return ReplaceRequest(account, order_id, version, Amendment(**terms), "corr")


async def together(batcher: IntakeBatcher, *requests: ReplaceRequest) -> list[Any]:
    """The requests queued before the flusher wakes: one batch."""
    calls = [batcher.replace(request) for request in requests]
    return await asyncio.gather(*calls, return_exceptions=True)


async def replace_rows(engine: AsyncEngine, order_id: uuid.UUID) -> int:
    async with engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM outbox WHERE payload LIKE '%\"replace\"%'"
            " AND payload LIKE '%' || :id || '%'"
        )
        return int((await conn.execute(query, {"id": str(order_id)})).scalar_one())


async def test_one_batch_gives_each_replace_its_own_outcome(
    engine: AsyncEngine, redis: Redis, batcher: IntakeBatcher
) -> None:
    mine = await new_account(engine, "100000.00", {"MSFT": 500})
    theirs = await new_account(engine, "100000.00", {"MSFT": 100})
    buy = await placed(batcher, mine, "buy", 10)  # reserves 1,900.00
    sell = await placed(batcher, mine, "sell", 100, "420.00", "MSFT")
    big = await placed(batcher, mine, "buy", 1)
    stale = await placed(batcher, mine, "buy", 2)
    done = await placed(batcher, mine, "buy", 3)
    foreign = await placed(batcher, theirs, "buy", 4)
    short = await placed(batcher, theirs, "sell", 50, "420.00", "MSFT")
    await finish_order(engine, done.id)
    await redis.flushdb()
    outbox_before = await count_rows(engine, "outbox")

    results = await together(
        batcher,
        replace(mine, buy, quantity=12),
        replace(mine, sell, quantity=150),
        replace(mine, big, quantity=10_000),
        replace(mine, stale, version=7, quantity=3),
        replace(mine, done, quantity=4),
        replace(mine, foreign, quantity=5),
        replace(mine, uuid.uuid4(), quantity=5),
        replace(theirs, short, quantity=200),
    )

    topped_up, more_shares, too_big, conflict, terminal, other, unknown, beyond = results
    assert isinstance(topped_up, Amended)
    assert topped_up.order.reserved_amount == Decimal("2280.00")
    assert isinstance(more_shares, Amended)
    assert more_shares.order.reserved_quantity == 150
    assert isinstance(too_big, intake.InsufficientFunds)
    assert isinstance(conflict, intake.VersionConflict)
    assert isinstance(terminal, intake.OrderNotModifiable)
    assert isinstance(other, intake.OrderNotFound)
    assert isinstance(unknown, intake.OrderNotFound)
    assert isinstance(beyond, intake.InsufficientPosition)
    assert beyond.extra == {"required": 150, "available": 50}
    # Only the two accepted wrote: their top-ups, their outbox rows, their commands.
    assert await count_rows(engine, "outbox") == outbox_before + 2
    reserved_cash = Decimal("2280.00") + Decimal("190.00") + Decimal("380.00")
    assert (await account_state(engine, mine))[1] == reserved_cash
    assert await position_state(engine, mine, "MSFT") == (500, 150)
    assert await position_state(engine, theirs, "MSFT") == (100, 50)
    published = sorted(
        (c.type, c.order_id, c.new_quantity) for _, c in await stream_commands(redis)
    )
    assert published == sorted([("replace", buy.id, 12), ("replace", sell.id, 150)])
    assert {topped_up.command.outbox_id, more_shares.command.outbox_id} == {
        c.outbox_id for _, c in await stream_commands(redis)
    }


async def test_replaces_of_one_account_draw_on_what_the_earlier_ones_left(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "4000.00")
    first = await placed(batcher, account, "buy", 10)
    second = await placed(batcher, account, "buy", 10)  # 3,800.00 reserved, 200.00 free

    results = await together(
        batcher, replace(account, first, quantity=11), replace(account, second, quantity=11)
    )

    accepted, refused = results
    assert isinstance(accepted, Amended)
    assert isinstance(refused, intake.InsufficientFunds)
    assert refused.extra == {"required": "190.00", "available": "10.00"}
    assert await account_state(engine, account) == (Decimal("4000.00"), Decimal("3990.00"))


async def test_two_replaces_of_one_order_in_one_batch_top_up_once(
    engine: AsyncEngine, redis: Redis, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    target = await placed(batcher, account, "buy", 10)
    await redis.flushdb()

    results = await together(
        batcher, replace(account, target, quantity=12), replace(account, target, quantity=12)
    )

    assert all(isinstance(result, Amended) for result in results), results
    assert [r.order.reserved_amount for r in results] == [Decimal("2280.00")] * 2
    assert (await account_state(engine, account))[1] == Decimal("2280.00")
    assert [c.type for _, c in await stream_commands(redis)] == ["replace", "replace"]


async def test_the_batch_call_skips_a_locked_order_instead_of_waiting_while_holding_others(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    """An engine batch holds one order of the request batch and will take another: the
    batch call must neither wait holding that other order (a deadlock) nor make it wait
    long. It writes what it can lock, commits, and writes the held order on its own once
    the engine lets go."""
    account = await new_account(engine, "100000.00")
    low, high = sorted(
        [await placed(batcher, account, "buy", 10), await placed(batcher, account, "buy", 20)],
        key=lambda placed_order: placed_order.id,
    )
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    engine_like = await asyncpg.connect(url)
    try:
        transaction = engine_like.transaction()
        await transaction.start()
        await engine_like.execute("SET LOCAL lock_timeout = '5s'")
        await engine_like.execute(
            "SELECT 1 FROM client_order WHERE id = $1 FOR NO KEY UPDATE", high.id
        )
        pending = asyncio.ensure_future(
            together(
                batcher,
                replace(account, low, quantity=low.quantity + 1),
                replace(account, high, quantity=high.quantity + 1),
            )
        )
        await eventually(
            lambda: replace_rows(engine, low.id),
            lambda rows: rows == 1,
            message="the unlocked order's replace was not committed while the other was held",
        )
        # The engine goes on to the order the batch call touched: free by now.
        await engine_like.execute(
            "SELECT 1 FROM client_order WHERE id = $1 FOR NO KEY UPDATE", low.id
        )
        assert await replace_rows(engine, high.id) == 0
        await transaction.commit()
        results = await pending
    finally:
        await engine_like.close()

    assert all(isinstance(result, Amended) for result in results), results
    assert await replace_rows(engine, high.id) == 1
    assert (await account_state(engine, account))[1] == Decimal("190.00") * 32


class FillsBeforeTheCall:
    """An asyncpg connection on which the batch call finds the order moved: a fill of 4
    lands after the read (on another connection, as the engine's batch would)."""

    def __init__(self, conn: Any, engine: AsyncEngine, order: OrderRecord) -> None:
        self._conn, self._engine, self._order = conn, engine, order
        self.calls = 0

    async def fetch(self, query: str, *args: Any) -> Any:
        if query == REPLACE_MANY_SQL:
            self.calls += 1
            async with self._engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE client_order SET filled_quantity = 4, status = 'partially_filled',"
                        " reserved_amount = reserved_amount - 760 WHERE id = :id"
                    ),
                    {"id": self._order.id},
                )
                await conn.execute(
                    text(
                        "UPDATE account SET reserved_cash = reserved_cash - 760,"
                        " cash = cash - 760 WHERE id = :id"
                    ),
                    {"id": self._order.account_id},
                )
        return await self._conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return await self._conn.fetchrow(query, *args)


async def test_an_order_that_moved_after_the_read_is_checked_again(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    target = await placed(batcher, account, "buy", 10)  # 1,900.00 reserved
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    raw = await asyncpg.connect(url)
    try:
        conn = FillsBeforeTheCall(raw, engine, target)
        (outcome,) = await replace_orders(
            conn,
            [replace(account, target, limit_price=Decimal("195.00"))],
            rules=RULES,
            now=utcnow(),
        )
    finally:
        await raw.close()

    # The call answered `stale`; checked again on a fresh read: 6 left at 195 = 1,170.00
    # (the stale read would have kept 1,900.00 and topped up nothing).
    assert conn.calls == 1
    assert isinstance(outcome, Amended)
    assert outcome.order.reserved_amount == Decimal("1170.00")
    assert (await account_state(engine, account))[1] == Decimal("1170.00")
    assert await replace_rows(engine, target.id) == 1
