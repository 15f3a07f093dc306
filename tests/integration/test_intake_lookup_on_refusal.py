"""Intake looks an earlier `client_order_id` up only when an order is a retry or is
refused (migration 0010), and a retry still gets its order back whatever the account's
state is by then — in both intake functions."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.orders.intake import intake_connector
from brokerx_api.settings import ApiSettings
from brokerx_core.db.base import utcnow
from brokerx_core.intake.prepared import (
    INSTRUMENTS_SQL,
    instrument_terms,
    place_call,
    prepare_order,
)
from tests.conftest import settings_overrides
from tests.support.intake import RULES, new_account, order
from tests.support.plans import WARM_CALLS
from tests.support.servers import ServerUrls
from tests.support.trading import account_state, count_rows, position_state

pytestmark = pytest.mark.usefixtures("instruments")

PER_ORDER = 10**6  # `set_based_from`: every call goes to `intake_place_orders`
SET_BASED = 1  # every call goes to `intake_place_batch`
# Rows of `client_order` that index scans fetched in the current transaction.
CLIENT_ORDER_INDEX_FETCHES = (
    "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'client_order'"
)
Place = Callable[..., Awaitable[list[tuple[str, uuid.UUID | None]]]]


def placing(connection: Any, account: uuid.UUID, set_based_from: int) -> Place:
    """`place(key, side=..., cap=...)`: one call of the intake function for one order of
    `quantity` AAPL at 190.00; its (outcome, order id)."""

    async def place(
        key: str, side: str = "buy", quantity: int = 10, cap: int | None = None
    ) -> list[tuple[str, uuid.UUID | None]]:
        aapl = instrument_terms((await connection.fetch(INSTRUMENTS_SQL, ["AAPL"]))[0])
        prepared = prepare_order(
            account,
            order(side, quantity, client_order_id=key),
            aapl,
            RULES,
            now=utcnow(),
            max_open_orders=cap,
        )
        sql, arguments = place_call([prepared], set_based_from=set_based_from)
        return [
            (row["r_outcome"], row["r_order_id"]) for row in await connection.fetch(sql, *arguments)
        ]

    return place


@contextlib.asynccontextmanager
async def placing_on(
    engine: AsyncEngine, account: uuid.UUID, set_based_from: int
) -> AsyncIterator[Place]:
    """`placing` on a connection of its own to the test database, closed after."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        yield placing(connection, account, set_based_from)
    finally:
        await connection.close()


async def test_an_accepted_order_reads_none_of_its_account_s_earlier_orders(
    engine: AsyncEngine, servers: ServerUrls, database_url: str
) -> None:
    account = await new_account(engine, "100000.00")
    connection = await intake_connector(ApiSettings(**settings_overrides(servers, database_url)))()
    try:
        place = placing(connection, account, PER_ORDER)
        # While the table is small, more calls than PostgreSQL's five custom plans.
        for call in range(WARM_CALLS):
            assert (await place(f"early-{call}", quantity=1))[0][0] == "accepted"
        # The account's history grows (closed orders: the open-order cap is not reached),
        # with no ANALYZE, so the plans cached above stay.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO client_order (id, account_id, client_order_id, symbol, side,"
                    " type, quantity, limit_price, status)"
                    " SELECT gen_random_uuid(), :account, 'old-' || n, 'AAPL', 'buy', 'limit',"
                    " 1, 190, 'canceled' FROM generate_series(1, 20000) AS n"
                ),
                {"account": account},
            )

        transaction = connection.transaction()
        await transaction.start()
        outcomes = await place("late", quantity=1)
        fetched = await connection.fetchval(CLIENT_ORDER_INDEX_FETCHES)
        await transaction.rollback()
    finally:
        await connection.close()

    assert outcomes[0][0] == "accepted"
    # 0003's lookup read all 20,000 through the account's (account, created_at) index.
    assert fetched < 100


@pytest.mark.parametrize("set_based_from", [PER_ORDER, SET_BASED], ids=["per-order", "set-based"])
async def test_a_retry_gets_its_order_back_once_the_account_s_cash_is_spent(
    engine: AsyncEngine, set_based_from: int
) -> None:
    account = await new_account(engine, "2000.00")
    async with placing_on(engine, account, set_based_from) as place:
        [(first, order_id)] = await place("k1")  # reserves 1,900.00 of 2,000.00
        [(again, again_id)] = await place("k1")

    assert (first, again) == ("accepted", "replay")
    assert again_id == order_id
    assert await account_state(engine, account) == (Decimal("2000.00"), Decimal("1900.00"))


@pytest.mark.parametrize("set_based_from", [PER_ORDER, SET_BASED], ids=["per-order", "set-based"])
async def test_a_retry_gets_its_order_back_at_the_open_order_cap(
    engine: AsyncEngine, set_based_from: int
) -> None:
    account = await new_account(engine, "100000.00")
    async with placing_on(engine, account, set_based_from) as place:
        [(first, order_id)] = await place("k1", cap=1)
        [(again, again_id)] = await place("k1", cap=1)
        [(other, _)] = await place("k2", cap=1)

    assert (first, again, other) == ("accepted", "replay", "too_many_open_orders")
    assert again_id == order_id
    assert await account_state(engine, account) == (Decimal("100000.00"), Decimal("1900.00"))


@pytest.mark.parametrize("set_based_from", [PER_ORDER, SET_BASED], ids=["per-order", "set-based"])
async def test_a_retried_sell_gets_its_order_back_once_the_shares_are_reserved(
    engine: AsyncEngine, set_based_from: int
) -> None:
    account = await new_account(engine, "0.00", shares={"AAPL": 10})
    async with placing_on(engine, account, set_based_from) as place:
        [(first, order_id)] = await place("s1", side="sell")
        [(again, again_id)] = await place("s1", side="sell")

    assert (first, again) == ("accepted", "replay")
    assert again_id == order_id
    assert await position_state(engine, account, "AAPL") == (10, 10)


@pytest.mark.parametrize("set_based_from", [PER_ORDER, SET_BASED], ids=["per-order", "set-based"])
async def test_a_retry_that_could_be_reserved_again_reserves_nothing(
    engine: AsyncEngine, set_based_from: int
) -> None:
    account = await new_account(engine, "100000.00", shares={"AAPL": 100})
    async with placing_on(engine, account, set_based_from) as place:
        placed = [await place("b1"), await place("s1", side="sell")]
        retried = [await place("b1"), await place("s1", side="sell")]

    assert [outcome for [(outcome, _)] in placed] == ["accepted", "accepted"]
    assert [outcome for [(outcome, _)] in retried] == ["replay", "replay"]
    assert [order_id for [(_, order_id)] in retried] == [order_id for [(_, order_id)] in placed]
    assert await account_state(engine, account) == (Decimal("100000.00"), Decimal("1900.00"))
    assert await position_state(engine, account, "AAPL") == (100, 10)
    assert await count_rows(engine, "outbox") == 2
