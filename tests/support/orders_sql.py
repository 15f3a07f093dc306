"""Orders, cancels and replaces written in SQL exactly as intake does (docs/trading.md,
"Intake"): reserve atomically, insert the order `pending_new` and an outbox row whose
payload is the command without `outbox_id`, commit, then XADD the command with it.

Lets the engine's tests and benchmarks run without the api; accounts are created with
the seeding helpers (a deposit in the ledger, share grants), like the market maker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from brokerx_core.messages import OrderCommand, encode
from brokerx_core.money import cash_up, ceil_to_tick
from brokerx_core.seed import credit_deposit, grant_shares
from brokerx_core.streams import order_stream_for

DEFAULT_SHARDS = 4
DEFAULT_COLLAR_PCT = Decimal("5")


@dataclass(frozen=True, slots=True)
class Trader:
    client_id: uuid.UUID
    account_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Sent:
    """A committed command, ready to XADD (`command` carries its outbox id)."""

    stream: str
    command: OrderCommand

    @property
    def order_id(self) -> uuid.UUID:
        return self.command.order_id


async def create_trader(
    conn: AsyncConnection,
    *,
    cash: Decimal | int = 0,
    shares: Mapping[str, int] | None = None,
    name: str = "trader",
) -> Trader:
    """An active client with an account, `cash` deposited and `shares` granted."""
    client_id, account_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO client (id, email, password_hash, first_name, last_name, date_of_birth,"
            " address, status, verified_at) VALUES (:id, :email, 'x', :name, 'Test',"
            " DATE '1990-01-01', '1 Test Street', 'active', now())"
        ),
        {"id": client_id, "email": f"{name}-{client_id.hex[:12]}@example.com", "name": name},
    )
    await conn.execute(
        text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
        {"id": account_id, "client": client_id},
    )
    if cash:
        await credit_deposit(conn, account_id, Decimal(cash))
    for symbol, quantity in (shares or {}).items():
        await grant_shares(conn, account_id, symbol, quantity)
    return Trader(client_id, account_id)


async def _outbox(conn: AsyncConnection, command: OrderCommand, shards: int) -> Sent:
    stream = order_stream_for(command.symbol, shards)
    outbox_id = (
        await conn.execute(
            text("INSERT INTO outbox (stream, payload) VALUES (:s, :p) RETURNING id"),
            {"s": stream, "p": command.model_dump_json(exclude={"outbox_id"})},
        )
    ).scalar_one()
    return Sent(stream, command.model_copy(update={"outbox_id": outbox_id}))


async def place_order(
    conn: AsyncConnection,
    account_id: uuid.UUID,
    symbol: str,
    side: str,
    quantity: int,
    *,
    limit_price: Decimal | str | None = None,
    time_in_force: str = "day",
    shards: int = DEFAULT_SHARDS,
    collar_pct: Decimal = DEFAULT_COLLAR_PCT,
    correlation_id: str | None = None,
) -> Sent | None:
    """Intake of one order; None when the reservation fails (insufficient funds/position).

    A limit order when `limit_price` is given, a market order otherwise.
    """
    price = Decimal(limit_price) if limit_price is not None else None
    order_type = "limit" if price is not None else "market"
    reserved_amount = Decimal("0")
    reserved_quantity = 0
    reservation_price = None
    if side == "buy":
        if price is None:
            ref, tick = (
                await conn.execute(
                    text(
                        "SELECT COALESCE(last_price, reference_price), tick_size"
                        " FROM instrument WHERE symbol = :s"
                    ),
                    {"s": symbol},
                )
            ).one()
            reservation_price = ceil_to_tick(ref * (1 + collar_pct / 100), tick)
        reserved_amount = cash_up(quantity * (price or reservation_price))
        reserved = await conn.execute(
            text(
                "UPDATE account SET reserved_cash = reserved_cash + :r"
                " WHERE id = :a AND cash - reserved_cash >= :r RETURNING id"
            ),
            {"r": reserved_amount, "a": account_id},
        )
    else:
        reserved_quantity = quantity
        reserved = await conn.execute(
            text(
                "UPDATE position SET reserved_quantity = reserved_quantity + :q"
                " WHERE account_id = :a AND symbol = :s AND quantity - reserved_quantity >= :q"
                " RETURNING account_id"
            ),
            {"q": quantity, "a": account_id, "s": symbol},
        )
    if reserved.first() is None:
        return None
    order_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO client_order (id, account_id, symbol, side, type, quantity, limit_price,"
            " time_in_force, status, reserved_amount, reserved_quantity, reservation_price,"
            " version, correlation_id) VALUES (:id, :a, :s, :side, :type, :q, :p, :tif,"
            " 'pending_new', :ra, :rq, :rp, 1, :corr)"
        ),
        {
            "id": order_id,
            "a": account_id,
            "s": symbol,
            "side": side,
            "type": order_type,
            "q": quantity,
            "p": price,
            "tif": time_in_force,
            "ra": reserved_amount,
            "rq": reserved_quantity,
            "rp": reservation_price,
            "corr": correlation_id,
        },
    )
    command = OrderCommand(
        type="new_order",
        order_id=order_id,
        symbol=symbol,
        version=1,
        correlation_id=correlation_id,
        ts=datetime.now(UTC),
    )
    return await _outbox(conn, command, shards)


async def _order(conn: AsyncConnection, order_id: uuid.UUID) -> Any:
    return (
        await conn.execute(
            text(
                "SELECT id, account_id, symbol, side, quantity, filled_quantity, limit_price,"
                " version, reserved_amount, reserved_quantity, status FROM client_order"
                " WHERE id = :id FOR UPDATE"
            ),
            {"id": order_id},
        )
    ).one()


async def request_cancel(
    conn: AsyncConnection, order_id: uuid.UUID, *, shards: int = DEFAULT_SHARDS
) -> Sent:
    """The outbox row of a `cancel` (the api never changes the order itself)."""
    order = await _order(conn, order_id)
    command = OrderCommand(
        type="cancel",
        order_id=order_id,
        symbol=order.symbol,
        version=order.version,
        ts=datetime.now(UTC),
    )
    return await _outbox(conn, command, shards)


async def request_replace(
    conn: AsyncConnection,
    order_id: uuid.UUID,
    *,
    version: int,
    quantity: int | None = None,
    limit_price: Decimal | str | None = None,
    time_in_force: str | None = None,
    shards: int = DEFAULT_SHARDS,
) -> Sent | None:
    """A `replace`, topping up the reservation when the new terms need more (as the api
    does); None when the order is terminal or the top-up fails."""
    order = await _order(conn, order_id)  # locked, like the api does
    if order.status not in ("pending_new", "new", "partially_filled"):
        return None
    new_quantity = quantity or order.quantity
    new_price = Decimal(limit_price) if limit_price is not None else order.limit_price
    leaves = new_quantity - order.filled_quantity
    if order.side == "buy":
        extra = cash_up(leaves * new_price) - order.reserved_amount
        if extra > 0:
            ok = await conn.execute(
                text(
                    "UPDATE account SET reserved_cash = reserved_cash + :r"
                    " WHERE id = :a AND cash - reserved_cash >= :r RETURNING id"
                ),
                {"r": extra, "a": order.account_id},
            )
            if ok.first() is None:
                return None
            await conn.execute(
                text(
                    "UPDATE client_order SET reserved_amount = reserved_amount + :r WHERE id = :id"
                ),
                {"r": extra, "id": order_id},
            )
    else:
        extra_quantity = leaves - order.reserved_quantity
        if extra_quantity > 0:
            ok = await conn.execute(
                text(
                    "UPDATE position SET reserved_quantity = reserved_quantity + :q"
                    " WHERE account_id = :a AND symbol = :s"
                    " AND quantity - reserved_quantity >= :q RETURNING account_id"
                ),
                {"q": extra_quantity, "a": order.account_id, "s": order.symbol},
            )
            if ok.first() is None:
                return None
            await conn.execute(
                text(
                    "UPDATE client_order SET reserved_quantity = reserved_quantity + :q"
                    " WHERE id = :id"
                ),
                {"q": extra_quantity, "id": order_id},
            )
    command = OrderCommand(
        type="replace",
        order_id=order_id,
        symbol=order.symbol,
        version=version,
        new_quantity=quantity,
        new_limit_price=Decimal(limit_price) if limit_price is not None else None,
        new_time_in_force=time_in_force,
        ts=datetime.now(UTC),
    )
    return await _outbox(conn, command, shards)


async def request_expire(
    conn: AsyncConnection, order_id: uuid.UUID, *, shards: int = DEFAULT_SHARDS
) -> Sent:
    """The outbox row of an `expire` (what the worker's DAY expiry writes)."""
    order = await _order(conn, order_id)
    command = OrderCommand(
        type="expire",
        order_id=order_id,
        symbol=order.symbol,
        version=order.version,
        ts=datetime.now(UTC),
    )
    return await _outbox(conn, command, shards)


async def publish(redis: Redis, sent: Iterable[Sent | None]) -> None:
    """XADD committed commands (after the commit, like the api's fast path)."""
    items = [s for s in sent if s is not None]
    if not items:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for item in items:
            pipe.xadd(item.stream, encode(item.command))  # type: ignore[arg-type]
        await pipe.execute()
