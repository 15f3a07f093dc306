"""Place a new order: pre-trade checks, reservation, order row and outbox row in the caller's
transaction (docs/trading.md, "Intake"). The caller commits, then publishes the command.

The hot path is four statements: replay lookup (only with a client_order_id), instrument
plus open-order count, the reservation, and one INSERT that writes the order and its
outbox row together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.commands import PendingCommand, order_command, outbox_payload, stamp
from brokerx_core.db.base import utcnow
from brokerx_core.intake.errors import (
    ClientOrderIdReused,
    InsufficientFunds,
    InsufficientPosition,
    TooManyOpenOrders,
    UnknownSymbol,
)
from brokerx_core.intake.pretrade import (
    InstrumentTerms,
    NewOrder,
    Reservation,
    check_limit_price,
    check_tradable,
    reservation_for,
)
from brokerx_core.intake.records import OPEN_SQL, ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import TradingRules
from brokerx_core.money import ZERO_CASH, fmt
from brokerx_core.streams import order_stream_for

_BY_CLIENT_ORDER_ID = text(
    f"SELECT {ORDER_COLUMNS} FROM client_order"
    " WHERE account_id = :account AND client_order_id = :client_order_id"
)
# The count stops at the limit: a busy account never scans all of its open orders.
_INSTRUMENT_AND_OPEN_ORDERS = text(
    "SELECT i.tick_size, i.reference_price, i.last_price, i.status,"
    " (SELECT count(*) FROM (SELECT 1 FROM client_order"
    f"   WHERE account_id = :account AND status IN {OPEN_SQL} LIMIT :cap) o) AS open_orders"
    " FROM instrument i WHERE i.symbol = :symbol"
)
_RESERVE_CASH = text(
    "UPDATE account SET reserved_cash = reserved_cash + :amount, updated_at = now()"
    " WHERE id = :account AND cash - reserved_cash >= :amount"
)
_RESERVE_SHARES = text(
    "UPDATE position SET reserved_quantity = reserved_quantity + :quantity, updated_at = now()"
    " WHERE account_id = :account AND symbol = :symbol"
    " AND quantity - reserved_quantity >= :quantity"
)
_AVAILABLE_CASH = text("SELECT cash - reserved_cash FROM account WHERE id = :account")
_AVAILABLE_SHARES = text(
    "SELECT quantity - reserved_quantity FROM position"
    " WHERE account_id = :account AND symbol = :symbol"
)
# The order and its command in one round trip; with a client_order_id already taken
# (a concurrent replay) neither row is written and nothing comes back.
_INSERT_ORDER_AND_COMMAND = text(
    "WITH o AS ("
    " INSERT INTO client_order (id, account_id, client_order_id, symbol, side, type, quantity,"
    "  limit_price, time_in_force, status, reserved_amount, reserved_quantity,"
    "  reservation_price, version, request_hash, correlation_id)"
    " VALUES (:id, :account, :client_order_id, :symbol, :side, :type, :quantity, :limit_price,"
    "  :time_in_force, 'pending_new', :reserved_amount, :reserved_quantity,"
    "  :reservation_price, 1, :request_hash, :correlation_id)"
    " ON CONFLICT (account_id, client_order_id) DO NOTHING"
    f" RETURNING {ORDER_COLUMNS}),"
    " c AS (INSERT INTO outbox (stream, payload)"
    "  SELECT CAST(:stream AS text), CAST(:payload AS text) FROM o RETURNING id)"
    " SELECT o.*, c.id AS outbox_id FROM o CROSS JOIN c"
)


@dataclass(frozen=True, slots=True)
class Placement:
    """The outcome of a placement: the order, and the command to publish after commit
    (None when the request replayed an existing order)."""

    order: OrderRecord
    command: PendingCommand | None

    @property
    def replayed(self) -> bool:
        return self.command is None


async def place_order(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    order: NewOrder,
    rules: TradingRules,
    correlation_id: str | None = None,
    now: datetime | None = None,
    max_open_orders: int | None = None,
) -> Placement:
    """Run intake for `order` on `account_id` inside the session's transaction.

    Raises an `IntakeError` having written nothing. `max_open_orders` overrides the
    rules' limit (the market maker gets a larger one). May roll the session back when
    a concurrent request took the same client_order_id first (it then replays it).
    """
    now = now or utcnow()
    if order.client_order_id is not None:
        existing = await _find_by_client_order_id(session, account_id, order.client_order_id)
        if existing is not None:
            return _replay(existing, order)

    limit = rules.max_open_orders if max_open_orders is None else max_open_orders
    row = (
        await session.execute(
            _INSTRUMENT_AND_OPEN_ORDERS,
            {"symbol": order.symbol, "account": account_id, "cap": limit},
        )
    ).first()
    if row is None:
        raise UnknownSymbol(f"unknown symbol {order.symbol}")
    instrument = InstrumentTerms(
        order.symbol, row.tick_size, row.reference_price, row.last_price, row.status
    )
    check_tradable(instrument, rules, now)
    if order.limit_price is not None:
        check_limit_price(order.limit_price, instrument, rules)
    if row.open_orders >= limit:
        raise TooManyOpenOrders(f"an account may hold at most {limit} open orders")

    reservation = reservation_for(order, instrument, rules)
    await reserve(session, account_id, order.side, order.symbol, reservation)

    order_id = uuid.uuid4()
    command = order_command(
        "new_order", order_id, order.symbol, 1, ts=now, correlation_id=correlation_id
    )
    inserted = (
        await session.execute(
            _INSERT_ORDER_AND_COMMAND,
            {
                "id": order_id,
                "account": account_id,
                "client_order_id": order.client_order_id,
                "symbol": order.symbol,
                "side": order.side,
                "type": order.type,
                "quantity": order.quantity,
                "limit_price": order.limit_price,
                "time_in_force": order.time_in_force,
                "reserved_amount": reservation.cash,
                "reserved_quantity": reservation.shares,
                "reservation_price": reservation.price,
                "request_hash": order.request_hash(),
                "correlation_id": correlation_id,
                "stream": order_stream_for(order.symbol, rules.shards),
                "payload": outbox_payload(command),
            },
        )
    ).first()
    if inserted is None:
        # Another request with this client_order_id committed while we checked: undo our
        # reservation and answer as its replay.
        assert order.client_order_id is not None
        await session.rollback()
        existing = await _find_by_client_order_id(session, account_id, order.client_order_id)
        assert existing is not None
        return _replay(existing, order)
    return Placement(
        OrderRecord.from_row(inserted), stamp(command, int(inserted.outbox_id), rules.shards)
    )


async def reserve(
    session: AsyncSession,
    account_id: uuid.UUID,
    side: str,
    symbol: str,
    reservation: Reservation,
) -> None:
    """Add a reservation to the account (cash) or position (shares), or raise
    `insufficient_funds` / `insufficient_position` without changing anything."""
    if side == "buy":
        if reservation.cash <= 0:
            return
        params = {"account": account_id, "amount": reservation.cash}
        result = await session.execute(_RESERVE_CASH, params)
        if result.rowcount == 0:  # type: ignore[attr-defined]
            available = (await session.execute(_AVAILABLE_CASH, params)).scalar() or ZERO_CASH
            raise InsufficientFunds(
                f"this order needs {fmt(reservation.cash)} of buying power;"
                f" {fmt(available)} is available",
                extra={"required": fmt(reservation.cash), "available": fmt(available)},
            )
        return
    if reservation.shares <= 0:
        return
    params = {"account": account_id, "symbol": symbol, "quantity": reservation.shares}
    result = await session.execute(_RESERVE_SHARES, params)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        available = (await session.execute(_AVAILABLE_SHARES, params)).scalar() or 0
        raise InsufficientPosition(
            f"this order sells {reservation.shares} {symbol};"
            f" {available} are available (no short selling)",
            extra={"required": reservation.shares, "available": int(available)},
        )


async def _find_by_client_order_id(
    session: AsyncSession, account_id: uuid.UUID, client_order_id: str
) -> OrderRecord | None:
    row = (
        await session.execute(
            _BY_CLIENT_ORDER_ID, {"account": account_id, "client_order_id": client_order_id}
        )
    ).first()
    return OrderRecord.from_row(row) if row is not None else None


def _replay(existing: OrderRecord, order: NewOrder) -> Placement:
    if existing.request_hash != order.request_hash():
        raise ClientOrderIdReused(
            f"client_order_id {order.client_order_id!r} was already used for another order",
            extra={"order_id": str(existing.id)},
        )
    return Placement(existing, None)
