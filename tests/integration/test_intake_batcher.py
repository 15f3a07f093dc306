"""Group commit of intake (`IntakeBatcher`): many requests' orders in one call, each
with exactly the outcome it would get alone. Real PostgreSQL and Redis; no engine runs,
so orders stay `pending_new` with their reservations."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core import intake
from brokerx_core.db.base import utcnow
from brokerx_core.intake.amend import Amended
from brokerx_core.intake.batcher import IntakeBatcher
from brokerx_core.intake.cancels import CancelRequest
from brokerx_core.intake.prepared import (
    INSTRUMENTS_SQL,
    PreparedOrder,
    instrument_terms,
    place_call,
    prepare_order,
)
from brokerx_core.invariants import find_violations
from tests.support.intake import RULES, new_account, order, running_batcher
from tests.support.polling import eventually
from tests.support.trading import account_state, count_rows, position_state, stream_commands

pytestmark = pytest.mark.usefixtures("instruments")

BLOCKED_ON_A_LOCK = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"


# Every batch through the per-order function (0003), or the set-based one (0007): both
# must give each order the same outcome.
@pytest.fixture(params=[10_000, 1], ids=["per-order function", "set-based function"])
def set_based_from(request: pytest.FixtureRequest) -> int:
    """From how many orders a batch goes through the set-based intake function."""
    return int(request.param)


@pytest.fixture
async def batcher(
    engine: AsyncEngine, redis: Redis, set_based_from: int
) -> AsyncIterator[IntakeBatcher]:
    async for running in running_batcher(
        engine, redis, connections=1, set_based_from=set_based_from
    ):
        yield running


def batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("brokerx_intake_batch_orders_count") or 0.0
    total = REGISTRY.get_sample_value("brokerx_intake_batch_orders_sum") or 0.0
    return count, total


async def settle(calls: list[Awaitable[intake.Placement]]) -> list[Any]:
    """Run the calls together: they all queue before the flusher wakes (one batch)."""
    return await asyncio.gather(*calls, return_exceptions=True)


async def count_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM client_order"))).scalar_one())


async def test_one_batch_gives_each_order_its_own_outcome(
    engine: AsyncEngine, redis: Redis, batcher: IntakeBatcher
) -> None:
    rich = await new_account(engine, "100000.00", {"MSFT": 500})
    poor = await new_account(engine, "100.00")
    count_before, sum_before = batches()

    results = await settle(
        [
            batcher.place(rich, order("buy", 10)),
            batcher.place(poor, order("buy", 10)),
            batcher.place(rich, order("sell", 10, "420.00", "MSFT")),
            batcher.place(rich, order("sell", 10_000, "420.00", "MSFT")),
            batcher.place(rich, order("buy", 1, "10.00", "ZZZZ")),
            batcher.place(rich, order("buy", 1, "190.005")),
            batcher.place(rich, order("buy", 5, client_order_id="dup")),
            batcher.place(rich, order("buy", 5, client_order_id="dup")),
            batcher.place(rich, order("buy", 6, client_order_id="dup")),
        ]
    )

    assert batches() == (count_before + 1, sum_before + 9)  # one group commit of 9
    accepted, funds, sold, oversold, unknown, tick, first, again, reused = results
    assert isinstance(accepted, intake.Placement)
    assert not accepted.replayed
    assert isinstance(funds, intake.InsufficientFunds)
    assert funds.extra == {"required": "1900.00", "available": "100.00"}
    assert isinstance(sold, intake.Placement)
    assert sold.order.reserved_quantity == 10
    assert isinstance(oversold, intake.InsufficientPosition)
    assert oversold.extra == {"required": 10_000, "available": 490}
    assert isinstance(unknown, intake.UnknownSymbol)
    assert isinstance(tick, intake.InvalidTick)
    assert isinstance(first, intake.Placement)
    assert not first.replayed
    assert isinstance(again, intake.Placement)
    assert again.replayed
    assert again.order.id == first.order.id
    assert isinstance(reused, intake.ClientOrderIdReused)

    assert await count_orders(engine) == 3
    cash, reserved = await account_state(engine, rich)
    assert reserved == Decimal("1900.00") + Decimal("950.00")
    assert await account_state(engine, poor) == (Decimal("100.00"), Decimal("0.00"))
    assert await position_state(engine, rich, "MSFT") == (500, 10)
    published = {command.order_id for _, command in await stream_commands(redis)}
    assert published == {accepted.order.id, sold.order.id, first.order.id}


async def test_a_value_postgres_refuses_fails_only_its_own_request(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    too_long = "x" * 65  # the HTTP layer refuses it; here it reaches the database

    before, after, poisoned = await settle(
        [
            batcher.place(account, order("buy", 1)),
            batcher.place(account, order("buy", 2)),
            batcher.place(account, order("buy", 3, client_order_id=too_long)),
        ]
    )

    assert isinstance(before, intake.Placement)
    assert isinstance(after, intake.Placement)
    assert isinstance(poisoned, asyncpg.DataError)
    assert await count_orders(engine) == 2
    assert (await account_state(engine, account))[1] == Decimal("570.00")


async def test_a_replay_is_answered_even_after_the_band_moved(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    first = await batcher.place(account, order("buy", 1, client_order_id="keep"))
    async with engine.begin() as conn:  # the market ran far away from 190.00
        await conn.execute(text("UPDATE instrument SET last_price = 400 WHERE symbol = 'AAPL'"))

    again = await batcher.place(account, order("buy", 1, client_order_id="keep"))
    fresh = await settle([batcher.place(account, order("buy", 1, client_order_id="new"))])

    assert again.replayed
    assert again.order.id == first.order.id
    assert isinstance(fresh[0], intake.PriceOutOfBand)


async def test_concurrent_batches_of_crossing_accounts_never_deadlock(
    engine: AsyncEngine, redis: Redis, set_based_from: int
) -> None:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    symbols = {"AAPL": "190.00", "MSFT": "420.00"}
    accounts = [
        await new_account(engine, "50000.00", {"AAPL": 300, "MSFT": 300}) for _ in range(12)
    ]
    batcher = IntakeBatcher(
        connect, redis, lambda: RULES, connections=3, max_batch=16, set_based_from=set_based_from
    )
    await batcher.start()
    rng = random.Random(7)
    try:
        calls = []
        for _ in range(600):
            symbol = rng.choice(list(symbols))
            side = rng.choice(("buy", "sell"))
            calls.append(
                batcher.place(
                    rng.choice(accounts), order(side, rng.randint(1, 40), symbols[symbol], symbol)
                )
            )
        results = await settle(calls)
    finally:
        await batcher.stop()

    unexpected = [r for r in results if not isinstance(r, intake.Placement | intake.IntakeError)]
    assert unexpected == []
    accepted = [r for r in results if isinstance(r, intake.Placement)]
    refused = {type(r).__name__ for r in results if isinstance(r, intake.IntakeError)}
    assert len(accepted) > 300
    assert refused <= {"InsufficientFunds", "InsufficientPosition"}
    assert await count_orders(engine) == len(accepted)
    assert await find_violations(engine, pending_grace_seconds=3600) == []


async def test_cancels_of_one_batch_are_each_checked_and_written_once(
    engine: AsyncEngine, redis: Redis, batcher: IntakeBatcher
) -> None:
    mine = await new_account(engine, "100000.00")
    theirs = await new_account(engine, "100000.00")
    open_one, open_two, done = [
        (await batcher.place(mine, order("buy", quantity))).order for quantity in (1, 2, 3)
    ]
    foreign = (await batcher.place(theirs, order("buy", 4))).order
    async with engine.begin() as conn:  # as the engine would have settled it
        await conn.execute(
            text("UPDATE client_order SET status = 'canceled', reserved_amount = 0 WHERE id = :id"),
            {"id": done.id},
        )
        await conn.execute(
            text("UPDATE account SET reserved_cash = reserved_cash - 570 WHERE id = :id"),
            {"id": mine},
        )
    await redis.flushdb()
    count_before = await count_rows(engine, "outbox")

    results = await settle(
        [
            batcher.cancel(CancelRequest(mine, open_one.id, None, "c-1")),
            batcher.cancel(CancelRequest(mine, open_two.id, 1)),
            batcher.cancel(CancelRequest(mine, open_two.id, 7)),
            batcher.cancel(CancelRequest(mine, done.id, None)),
            batcher.cancel(CancelRequest(mine, foreign.id, None)),
            batcher.cancel(CancelRequest(mine, uuid.uuid4(), None)),
        ]
    )

    first, second, stale, terminal, other, unknown = results
    assert isinstance(first, Amended)
    assert first.order.id == open_one.id
    assert isinstance(second, Amended)
    assert isinstance(stale, intake.VersionConflict)
    assert isinstance(terminal, intake.OrderNotCancelable)
    assert isinstance(other, intake.OrderNotFound)
    assert isinstance(unknown, intake.OrderNotFound)
    assert await count_rows(engine, "outbox") == count_before + 2
    published = [
        (command.type, command.order_id, command.correlation_id)
        for _, command in await stream_commands(redis)
    ]
    assert sorted(published, key=str) == sorted(
        [("cancel", open_one.id, "c-1"), ("cancel", open_two.id, None)], key=str
    )


async def test_orders_of_one_account_in_one_batch_draw_on_what_the_earlier_ones_left(
    engine: AsyncEngine, redis: Redis, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "2090.00", {"MSFT": 15})
    other = await new_account(engine, "2000.00")

    results = await settle(
        [
            batcher.place(account, order("buy", 10)),  # 1,900.00 of 2,090.00
            batcher.place(account, order("buy", 2)),  # 380.00 > the 190.00 left
            batcher.place(other, order("buy", 10)),  # another account: its own cash
            batcher.place(account, order("sell", 10, "420.00", "MSFT")),
            batcher.place(account, order("sell", 6, "420.00", "MSFT")),  # 5 left
            batcher.place(account, order("sell", 5, "420.00", "MSFT")),
            batcher.place(account, order("buy", 1)),  # 190.00 fits exactly
        ]
    )

    bought, short, theirs, sold, oversold, rest, exact = results
    assert isinstance(bought, intake.Placement)
    assert isinstance(short, intake.InsufficientFunds)
    assert short.extra == {"required": "380.00", "available": "190.00"}
    assert isinstance(theirs, intake.Placement)
    assert isinstance(sold, intake.Placement)
    assert isinstance(oversold, intake.InsufficientPosition)
    assert oversold.extra == {"required": 6, "available": 5}
    assert isinstance(rest, intake.Placement)
    assert isinstance(exact, intake.Placement)
    assert await account_state(engine, account) == (Decimal("2090.00"), Decimal("2090.00"))
    assert await account_state(engine, other) == (Decimal("2000.00"), Decimal("1900.00"))
    assert await position_state(engine, account, "MSFT") == (15, 15)
    published = [command.order_id for _, command in await stream_commands(redis)]
    assert sorted(published) == sorted(
        p.order.id for p in (bought, theirs, sold, rest, exact) if isinstance(p, intake.Placement)
    )
    assert await find_violations(engine, pending_grace_seconds=3600) == []


async def test_the_open_order_cap_counts_the_batch_s_own_orders(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    await batcher.place(account, order("buy", 1))  # one open order before the batch

    results = await settle(
        [batcher.place(account, order("buy", n), max_open_orders=3) for n in range(2, 6)]
    )

    outcomes = [type(result).__name__ for result in results]
    assert outcomes == ["Placement", "Placement", "TooManyOpenOrders", "TooManyOpenOrders"]
    assert await count_orders(engine) == 3


async def test_a_client_order_id_another_call_commits_meanwhile_is_a_replay(
    engine: AsyncEngine, set_based_from: int
) -> None:
    """The rare race: another intake wrote the same `client_order_id` but had not yet
    committed when this batch looked. Its order wins; this batch's orders with that id
    give their reservation back and answer with it, the others go on."""
    account = await new_account(engine, "100000.00")
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        rows = await first.fetch(INSTRUMENTS_SQL, ["AAPL"])
        aapl = instrument_terms(rows[0])

        def prepared(quantity: int, key: str | None) -> PreparedOrder:
            return prepare_order(
                account, order("buy", quantity, client_order_id=key), aapl, RULES, now=utcnow()
            )

        winner = prepared(1, "race")
        transaction = first.transaction()
        await transaction.start()
        (won,) = await first.fetch(*call([winner], set_based_from))
        losers = [prepared(2, None), prepared(1, "race"), prepared(1, "race")]
        pending = asyncio.create_task(second.fetch(*call(losers, set_based_from)))
        await eventually(
            lambda: first.fetchval(BLOCKED_ON_A_LOCK, second.get_server_pid()),
            message="the second intake never waited for the first",
        )
        await transaction.commit()
        other, lost, again = await pending
    finally:
        await first.close()
        await second.close()

    assert won["r_outcome"] == "accepted"
    assert other["r_outcome"] == "accepted"
    assert other["r_outbox_id"] > won["r_outbox_id"]
    assert (lost["r_outcome"], lost["r_order_id"]) == ("replay", winner.order_id)
    assert (again["r_outcome"], again["r_order_id"]) == ("replay", winner.order_id)
    assert lost["r_outbox_id"] is None
    assert await count_orders(engine) == 2
    assert await account_state(engine, account) == (Decimal("100000.00"), Decimal("570.00"))
    assert await count_rows(engine, "outbox") == 2


def call(prepared: list[PreparedOrder], set_based_from: int) -> list[Any]:
    """The intake statement and its arguments, as `fetch(*call(...))` takes them."""
    sql, arguments = place_call(prepared, set_based_from=set_based_from)
    return [sql, *arguments]
