"""Planting invariant violations for tests/integration/test_invariants.py: orders, trades,
reservations and ledger entries written directly in SQL, consistent unless told not to."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from brokerx_core.invariants import Violation
from tests.support.factories import ClientFixture, create_client, grant_position


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


@contextlib.asynccontextmanager
async def without_constraints(engine: AsyncEngine, *names: str) -> AsyncIterator[AsyncConnection]:
    """A transaction in which these CHECK constraints (`table.constraint`) are dropped;
    rolled back at the end, so the schema is untouched afterwards."""
    async with engine.connect() as conn, conn.begin() as transaction:
        for name in names:
            table, constraint = name.split(".")
            await conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}"))
        try:
            yield conn
        finally:
            await transaction.rollback()


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


async def rest_order(
    conn: AsyncConnection,
    account_id: uuid.UUID,
    side: str,
    price: Decimal,
    *,
    quantity: int = 10,
    status: str = "new",
) -> uuid.UUID:
    """An open limit order holding its reservation, as intake leaves it: the account's
    reserved cash (buy) or the position's reserved shares (sell) include it."""
    if side == "buy":
        amount = price * quantity
        await conn.execute(
            text("UPDATE account SET reserved_cash = reserved_cash + :r WHERE id = :id"),
            {"r": amount, "id": account_id},
        )
        return await insert_order(
            conn,
            account_id,
            side,
            status=status,
            quantity=quantity,
            price=price,
            reserved_amount=amount,
        )
    await conn.execute(
        text(
            "UPDATE position SET reserved_quantity = reserved_quantity + :q"
            " WHERE account_id = :id AND symbol = 'AAPL'"
        ),
        {"q": quantity, "id": account_id},
    )
    return await insert_order(
        conn,
        account_id,
        side,
        status=status,
        quantity=quantity,
        price=price,
        reserved_quantity=quantity,
    )


async def add_ledger_entry(
    conn: AsyncConnection, account_id: uuid.UUID, kind: str, amount: Decimal, reference: uuid.UUID
) -> None:
    """An entry and the cash it moves, consistently (cash = Σ entries still holds)."""
    await conn.execute(
        text(
            "WITH moved AS (UPDATE account SET cash = cash + :amount WHERE id = :account"
            " RETURNING cash)"
            " INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after,"
            " reference_id) SELECT :id, :account, :kind, :amount, cash, :ref FROM moved"
        ),
        {
            "id": uuid.uuid4(),
            "account": account_id,
            "kind": kind,
            "amount": amount,
            "ref": reference,
        },
    )


async def plant_trade(
    conn: AsyncConnection,
    buyer_account: uuid.UUID,
    seller_account: uuid.UUID,
    *,
    price: Decimal = Decimal("190"),
    quantity: int = 10,
    notional: Decimal | None = None,
    buy_order_quantity: int | None = None,
) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A trade of `quantity` AAPL at `price` between two filled orders, settled as the
    engine settles one: `notional` (price x quantity unless told) leaves the buyer's cash
    for the seller's, both in the ledger, and the shares go from the seller's position
    (created if need be: a seller without shares goes short) to the buyer's.

    `buy_order_quantity` below `quantity` overfills the buy order (it is then left
    `partially_filled`, which the schema refuses unless its constraints are dropped).
    Returns (trade id, buy order id, sell order id)."""
    amount = price * quantity if notional is None else notional
    ordered = quantity if buy_order_quantity is None else buy_order_quantity
    buy = await insert_order(
        conn,
        buyer_account,
        "buy",
        status="filled" if ordered == quantity else "partially_filled",
        quantity=ordered,
        filled=quantity,
    )
    sell = await insert_order(
        conn, seller_account, "sell", status="filled", quantity=quantity, filled=quantity
    )
    trade_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO trade (id, symbol, price, quantity, buy_order_id, sell_order_id,"
            " buyer_account_id, seller_account_id, aggressor_side)"
            " VALUES (:id, 'AAPL', :price, :qty, :buy, :sell, :buyer, :seller, 'buy')"
        ),
        {
            "id": trade_id,
            "price": price,
            "qty": quantity,
            "buy": buy,
            "sell": sell,
            "buyer": buyer_account,
            "seller": seller_account,
        },
    )
    await add_ledger_entry(conn, buyer_account, "buy", -amount, trade_id)
    await add_ledger_entry(conn, seller_account, "sell", amount, trade_id)
    for account, moved in ((buyer_account, quantity), (seller_account, -quantity)):
        values = {"account": account, "moved": moved, "price": price}
        updated = await conn.execute(
            text(
                "UPDATE position SET quantity = quantity + :moved"
                " WHERE account_id = :account AND symbol = 'AAPL'"
            ),
            values,
        )
        if updated.rowcount == 0:
            await conn.execute(
                text(
                    "INSERT INTO position (account_id, symbol, quantity, avg_cost)"
                    " VALUES (:account, 'AAPL', :moved, :price)"
                ),
                values,
            )
    return trade_id, buy, sell


async def settle_trade(engine: AsyncEngine) -> SettledTrade:
    """A buyer and a seller whose orders traded 10 AAPL at 190.00, settled correctly."""
    buyer = await create_client(engine, cash=Decimal("10000.00"))
    seller = await create_client(engine)
    await grant_position(engine, seller.account_id, "AAPL", 10)
    async with engine.begin() as conn:
        trade_id, buy, sell = await plant_trade(conn, buyer.account_id, seller.account_id)
    return SettledTrade(buyer, seller, trade_id, buy, sell)
