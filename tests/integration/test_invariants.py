"""The invariant checker (`brokerx_core.invariants`) against violations planted in the
database: each must be found, and a consistent database must show none.

Some violations cannot exist while the schema's CHECK constraints stand (a terminal
order holding a reservation, a status that contradicts its fills). Those are planted in
a transaction that drops the constraint, checked on that same connection, and rolled
back, so the schema is untouched afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from brokerx_core.invariants import Violation, find_violations, find_violations_on
from brokerx_core.seed import credit_deposit
from tests.support.factories import ClientFixture, create_client, grant_position

# `redis` only because the conftest's cleanup fetches it lazily, which fails from inside
# the running loop unless a test already depends on it.
pytestmark = pytest.mark.usefixtures("redis", "instruments")


@dataclass(frozen=True, slots=True)
class SettledTrade:
    buyer: ClientFixture
    seller: ClientFixture
    trade_id: uuid.UUID
    buy_order_id: uuid.UUID
    sell_order_id: uuid.UUID


def names(violations: list[Violation]) -> set[str]:
    return {violation.invariant for violation in violations}


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def insert_order(
    conn: AsyncConnection,
    account_id: uuid.UUID,
    side: str,
    *,
    status: str = "new",
    quantity: int = 10,
    price: Decimal = Decimal("190.00"),
    filled: int = 0,
    reserved_amount: Decimal = Decimal("0"),
    reserved_quantity: int = 0,
) -> uuid.UUID:
    order_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO client_order (id, account_id, symbol, side, type, quantity,"
            " limit_price, status, filled_quantity, reserved_amount, reserved_quantity)"
            " VALUES (:id, :account, 'AAPL', :side, 'limit', :qty, :price, :status, :filled,"
            " :amount, :reserved_qty)"
        ),
        {
            "id": order_id,
            "account": account_id,
            "side": side,
            "qty": quantity,
            "price": price,
            "status": status,
            "filled": filled,
            "amount": reserved_amount,
            "reserved_qty": reserved_quantity,
        },
    )
    return order_id


async def settle_trade(engine: AsyncEngine) -> SettledTrade:
    """A buyer and a seller whose orders traded 10 AAPL at 190.00, settled correctly."""
    buyer = await create_client(engine, cash=Decimal("10000.00"))
    seller = await create_client(engine)
    await grant_position(engine, seller.account_id, "AAPL", 10)
    trade_id = uuid.uuid4()
    async with engine.begin() as conn:
        buy = await insert_order(conn, buyer.account_id, "buy", status="filled", filled=10)
        sell = await insert_order(conn, seller.account_id, "sell", status="filled", filled=10)
        await conn.execute(
            text(
                "INSERT INTO trade (id, symbol, price, quantity, buy_order_id, sell_order_id,"
                " buyer_account_id, seller_account_id, aggressor_side)"
                " VALUES (:id, 'AAPL', 190, 10, :buy, :sell, :buyer, :seller, 'buy')"
            ),
            {
                "id": trade_id,
                "buy": buy,
                "sell": sell,
                "buyer": buyer.account_id,
                "seller": seller.account_id,
            },
        )
        for account, kind, amount in (
            (buyer.account_id, "buy", Decimal("-1900.00")),
            (seller.account_id, "sell", Decimal("1900.00")),
        ):
            await conn.execute(
                text(
                    "WITH moved AS (UPDATE account SET cash = cash + :amount WHERE id = :account"
                    " RETURNING cash)"
                    " INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after,"
                    " reference_id) SELECT :id, :account, :kind, :amount, cash, :trade FROM moved"
                ),
                {
                    "id": uuid.uuid4(),
                    "account": account,
                    "kind": kind,
                    "amount": amount,
                    "trade": trade_id,
                },
            )
        await conn.execute(
            text(
                "INSERT INTO position (account_id, symbol, quantity, avg_cost)"
                " VALUES (:buyer, 'AAPL', 10, 190)"
            ),
            {"buyer": buyer.account_id},
        )
        await conn.execute(
            text("UPDATE position SET quantity = quantity - 10 WHERE account_id = :seller"),
            {"seller": seller.account_id},
        )
    return SettledTrade(buyer, seller, trade_id, buy, sell)


async def test_a_consistent_database_has_no_violation(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    holder = await create_client(engine, cash=Decimal("5000.00"))
    await grant_position(engine, holder.account_id, "AAPL", 20)
    async with engine.begin() as conn:
        # Open orders whose reservations the account and the position hold.
        await insert_order(
            conn,
            holder.account_id,
            "buy",
            price=Decimal("189.00"),
            reserved_amount=Decimal("1890.00"),
        )
        await insert_order(
            conn, holder.account_id, "sell", price=Decimal("191.00"), reserved_quantity=10
        )
        await credit_deposit(conn, trade.buyer.account_id, Decimal("0.01"))
    await execute(
        engine, "UPDATE account SET reserved_cash = 1890 WHERE id = :id", id=holder.account_id
    )
    await execute(
        engine,
        "UPDATE position SET reserved_quantity = 10 WHERE account_id = :id",
        id=holder.account_id,
    )

    assert await find_violations(engine) == []


async def test_cash_that_differs_from_its_ledger_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    await execute(engine, "UPDATE account SET cash = cash + 1 WHERE id = :id", id=client.account_id)

    violations = await find_violations(engine)

    assert "1: cash = sum of ledger entries" in names(violations)
    assert str(client.account_id) in {v.subject for v in violations}


async def test_a_middle_balance_that_lies_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await credit_deposit(conn, client.account_id, Decimal("50.00"))
    # The sum and the last balance still agree with cash; only the first entry lies.
    await execute(
        engine,
        "UPDATE ledger_entry SET balance_after = 99 WHERE seq ="
        " (SELECT min(seq) FROM ledger_entry WHERE account_id = :id)",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {"1: balance_after = running sum of entries"}


async def test_reserved_cash_without_open_buy_orders_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    await execute(
        engine, "UPDATE account SET reserved_cash = 40 WHERE id = :id", id=client.account_id
    )

    assert names(await find_violations(engine)) == {
        "1: reserved_cash = reservations of open buy orders"
    }


async def test_an_open_buy_reservation_the_account_does_not_hold_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "buy", reserved_amount=Decimal("50.00"))

    assert names(await find_violations(engine)) == {
        "1: reserved_cash = reservations of open buy orders"
    }


async def test_a_position_that_differs_from_grants_and_fills_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    await execute(
        engine,
        "UPDATE position SET quantity = quantity + 5 WHERE account_id = :id",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {
        "2: qty = grants + bought - sold",
        "3: shares of a symbol = seeded shares",
    }


async def test_shares_reserved_by_no_open_sell_are_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    await execute(
        engine,
        "UPDATE position SET reserved_quantity = 3 WHERE account_id = :id",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {
        "2: reserved_qty = reservations of open sell orders"
    }


async def test_an_open_sell_reserving_shares_of_no_position_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine)
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "sell", reserved_quantity=5)

    assert names(await find_violations(engine)) == {
        "2: reserved_qty = reservations of open sell orders"
    }


async def test_filled_quantity_without_fills_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "buy", status="partially_filled", filled=3)

    assert names(await find_violations(engine)) == {"4: filled_qty = sum of fills <= quantity"}


async def test_a_terminal_order_holding_a_reservation_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    async with engine.connect() as conn, conn.begin() as transaction:
        await conn.execute(
            text(
                "ALTER TABLE client_order"
                " DROP CONSTRAINT ck_client_order_terminal_holds_no_reservation"
            )
        )
        await insert_order(conn, client.account_id, "sell", status="canceled", reserved_quantity=4)
        await conn.execute(
            text("UPDATE position SET reserved_quantity = 4 WHERE account_id = :id"),
            {"id": client.account_id},
        )

        violations = await find_violations_on(conn)
        await transaction.rollback()

    # Both views of the leak: the order still holds shares, and the position holds
    # shares that no open order needs.
    assert names(violations) == {
        "4: terminal order holds no reservation",
        "2: reserved_qty = reservations of open sell orders",
    }


async def test_a_status_that_contradicts_its_fills_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    async with engine.connect() as conn, conn.begin() as transaction:
        await conn.execute(
            text(
                "ALTER TABLE client_order DROP CONSTRAINT ck_client_order_status_agrees_with_fills"
            )
        )
        await insert_order(conn, client.account_id, "buy", status="filled", filled=0)

        violations = await find_violations_on(conn)
        await transaction.rollback()

    assert names(violations) == {"4: status agrees with filled_qty"}


async def test_cash_credited_without_a_deposit_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    # A "deposit" ledger entry with cash to match, but no deposit behind it.
    await execute(
        engine,
        "WITH moved AS (UPDATE account SET cash = cash + 500 WHERE id = :id RETURNING cash)"
        " INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after, reference_id)"
        " SELECT gen_random_uuid(), :id, 'deposit', 500, cash, gen_random_uuid() FROM moved",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {"3: deposit entries = deposits"}


async def test_a_trade_entry_on_a_third_account_is_found(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    third = await create_client(engine)
    await execute(
        engine,
        "UPDATE ledger_entry SET account_id = :third WHERE kind = 'buy' AND reference_id = :trade",
        third=third.account_id,
        trade=trade.trade_id,
    )

    assert "3: every trade ledger entry belongs to its trade's buyer or seller" in names(
        await find_violations(engine)
    )


async def test_a_trade_that_moved_the_wrong_amount_is_found(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    # Seller credited one cent too much, consistently in cash and ledger.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ledger_entry SET amount = amount + 0.01, balance_after = balance_after"
                " + 0.01 WHERE kind = 'sell' AND reference_id = :trade"
            ),
            {"trade": trade.trade_id},
        )
        await conn.execute(
            text("UPDATE account SET cash = cash + 0.01 WHERE id = :id"),
            {"id": trade.seller.account_id},
        )

    assert names(await find_violations(engine)) == {
        "3: each trade moves price x qty between two accounts",
        "3: total cash = deposits - withdrawals",
    }
