"""Invariant 3 (cash changes only by deposits and withdrawals) against planted fee and
withdrawal entries: a fee moves money from a client to the house account and is not
external money; a withdrawal only ever takes money out."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.invariants import find_violations
from tests.integration.invariant_planting import add_ledger_entry, names
from tests.support.factories import create_client

# `redis` only because the conftest's cleanup fetches it lazily (see test_invariants.py).
pytestmark = pytest.mark.usefixtures("redis", "instruments")


async def test_a_fee_that_destroys_money_is_found(engine: AsyncEngine) -> None:
    """A fee entry is not external money: without a credit to the house account it
    makes cash vanish, even though the client's ledger and cash agree."""
    client = await create_client(engine, cash=Decimal("100.00"))
    fee = uuid.uuid4()
    async with engine.begin() as conn:
        await add_ledger_entry(conn, client.account_id, "fee", Decimal("-1.50"), fee)

    violations = await find_violations(engine)

    assert names(violations) == {
        "3: total cash = deposits - withdrawals",
        "3: each fee moves money between accounts",
    }
    assert str(fee) in {v.subject for v in violations}


async def test_a_fee_paid_to_the_house_account_and_a_withdrawal_are_consistent(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    house = await create_client(engine)
    fee = uuid.uuid4()
    async with engine.begin() as conn:
        await add_ledger_entry(conn, client.account_id, "fee", Decimal("-1.50"), fee)
        await add_ledger_entry(conn, house.account_id, "fee", Decimal("1.50"), fee)
        await add_ledger_entry(
            conn, client.account_id, "withdrawal", Decimal("-20.00"), uuid.uuid4()
        )

    assert await find_violations(engine) == []


async def test_a_withdrawal_that_credits_cash_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await add_ledger_entry(
            conn, client.account_id, "withdrawal", Decimal("500.00"), uuid.uuid4()
        )

    assert names(await find_violations(engine)) == {"3: withdrawal entries are debits"}
