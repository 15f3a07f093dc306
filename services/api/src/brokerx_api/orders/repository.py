"""Reads of orders, fills and trades (Core SQL; the intake writes live in brokerx_core.intake)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.intake import OPEN_SQL, ORDER_COLUMNS, OrderRecord

StatusFilter = Literal["open", "closed", "all"]
CLOSED_SQL = "('filled', 'canceled', 'expired', 'rejected')"

_ORDER = text(f"SELECT {ORDER_COLUMNS} FROM client_order WHERE id = :id AND account_id = :account")
_FILLS = text(
    "SELECT id, price, quantity, created_at FROM trade"
    " WHERE buy_order_id = :id OR sell_order_id = :id ORDER BY seq"
)
# Each branch walks its (account, seq) index backwards and stops at the page size.
_TRADES = text(
    "SELECT * FROM ("
    " (SELECT id, seq, symbol, price, quantity, created_at, buy_order_id AS order_id,"
    "   'buy' AS side FROM trade WHERE buyer_account_id = :account"
    "   AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)"
    "   AND (CAST(:before AS bigint) IS NULL OR seq < :before)"
    "   ORDER BY seq DESC LIMIT :limit)"
    " UNION ALL"
    " (SELECT id, seq, symbol, price, quantity, created_at, sell_order_id AS order_id,"
    "   'sell' AS side FROM trade WHERE seller_account_id = :account"
    "   AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol)"
    "   AND (CAST(:before AS bigint) IS NULL OR seq < :before)"
    "   ORDER BY seq DESC LIMIT :limit)"
    ") t ORDER BY seq DESC LIMIT :limit"
)


@dataclass(frozen=True, slots=True)
class Fill:
    trade_id: uuid.UUID
    price: Decimal
    quantity: int
    ts: datetime


@dataclass(frozen=True, slots=True)
class ClientTrade:
    trade_id: uuid.UUID
    seq: int
    order_id: uuid.UUID
    symbol: str
    side: str
    price: Decimal
    quantity: int
    ts: datetime


async def get_order(
    session: AsyncSession, account_id: uuid.UUID, order_id: uuid.UUID
) -> OrderRecord | None:
    """One of the account's orders (None for an unknown or foreign order)."""
    row = (await session.execute(_ORDER, {"id": order_id, "account": account_id})).first()
    return OrderRecord.from_row(row) if row is not None else None


async def get_fills(session: AsyncSession, order_id: uuid.UUID) -> list[Fill]:
    """The order's executions, oldest first."""
    rows = await session.execute(_FILLS, {"id": order_id})
    return [Fill(r.id, r.price, r.quantity, r.created_at) for r in rows]


async def list_orders(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    status: StatusFilter,
    symbol: str | None,
    limit: int,
    after: tuple[datetime, int] | None,
) -> tuple[list[OrderRecord], tuple[datetime, int] | None]:
    """A page of the account's orders, newest first; returns the key of the next page."""
    clauses = ["account_id = :account"]
    params: dict[str, object] = {"account": account_id, "limit": limit + 1}
    if status == "open":
        clauses.append(f"status IN {OPEN_SQL}")
    elif status == "closed":
        clauses.append(f"status IN {CLOSED_SQL}")
    if symbol is not None:
        clauses.append("symbol = :symbol")
        params["symbol"] = symbol
    if after is not None:
        clauses.append("(created_at, intake_seq) < (:after_ts, :after_seq)")
        params["after_ts"], params["after_seq"] = after
    # Only fixed fragments are joined here: every value is a bound parameter.
    query = text(
        f"SELECT {ORDER_COLUMNS}, intake_seq FROM client_order WHERE {' AND '.join(clauses)}"
        " ORDER BY created_at DESC, intake_seq DESC LIMIT :limit"
    )
    rows = (await session.execute(query, params)).all()
    page = rows[:limit]
    orders = [OrderRecord.from_row(r) for r in page]
    next_key = (page[-1].created_at, page[-1].intake_seq) if len(rows) > limit else None
    return orders, next_key


async def list_trades(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    symbol: str | None,
    limit: int,
    before_seq: int | None,
) -> tuple[list[ClientTrade], int | None]:
    """A page of the account's fills, newest first; returns the key of the next page."""
    rows = (
        await session.execute(
            _TRADES,
            {"account": account_id, "symbol": symbol, "before": before_seq, "limit": limit + 1},
        )
    ).all()
    page = rows[:limit]
    trades = [
        ClientTrade(r.id, r.seq, r.order_id, r.symbol, r.side, r.price, r.quantity, r.created_at)
        for r in page
    ]
    return trades, (page[-1].seq if len(rows) > limit else None)
