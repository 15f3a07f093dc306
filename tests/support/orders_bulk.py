"""Many orders at once, reserved as intake reserves them (benchmarks, big fixtures)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from brokerx_core.messages import OrderCommand
from brokerx_core.money import cash_up, ceil_to_tick
from brokerx_core.streams import order_stream_for
from tests.support.orders_sql import DEFAULT_COLLAR_PCT, DEFAULT_SHARDS, Sent


@dataclass(frozen=True, slots=True)
class OrderSpec:
    account_id: uuid.UUID
    symbol: str
    side: str
    quantity: int
    limit_price: Decimal | None = None  # None: a market order
    time_in_force: str = "day"


async def insert_orders_bulk(
    conn: AsyncConnection,
    specs: list[OrderSpec],
    *,
    resting: bool = False,
    shards: int = DEFAULT_SHARDS,
    collar_pct: Decimal = DEFAULT_COLLAR_PCT,
) -> list[Sent]:
    """Intake of many orders with a handful of statements (benchmarks, big fixtures).

    Same reservations as `place_order`, but without the per-order availability check:
    the accounts must hold enough (the schema's CHECKs refuse it otherwise). With
    `resting`, the orders are inserted as already in the book (`new`, priority in list
    order, no command) — the caller makes sure they do not cross.
    """
    refs = {
        symbol: (ref, tick)
        for symbol, ref, tick in (
            await conn.execute(
                text(
                    "SELECT symbol, COALESCE(last_price, reference_price), tick_size"
                    " FROM instrument"
                )
            )
        ).all()
    }
    ids = [uuid.uuid4() for _ in specs]
    amounts: list[Decimal] = []
    quantities: list[int] = []
    collars: list[Decimal | None] = []
    cash_by_account: dict[uuid.UUID, Decimal] = {}
    shares_by_position: dict[tuple[uuid.UUID, str], int] = {}
    for spec in specs:
        collar = None
        amount, quantity = Decimal("0"), 0
        if spec.side == "buy":
            if spec.limit_price is None:
                ref, tick = refs[spec.symbol]
                collar = ceil_to_tick(ref * (1 + collar_pct / 100), tick)
            amount = cash_up(spec.quantity * (spec.limit_price or collar))  # type: ignore[operator]
            cash_by_account[spec.account_id] = cash_by_account.get(spec.account_id, 0) + amount
        else:
            quantity = spec.quantity
            key = (spec.account_id, spec.symbol)
            shares_by_position[key] = shares_by_position.get(key, 0) + quantity
        amounts.append(amount)
        quantities.append(quantity)
        collars.append(collar)
    await conn.execute(
        text(
            "UPDATE account a SET reserved_cash = a.reserved_cash + u.r"
            " FROM unnest(CAST(:ids AS uuid[]), CAST(:r AS numeric[])) AS u(id, r)"
            " WHERE a.id = u.id"
        ),
        {"ids": list(cash_by_account), "r": list(cash_by_account.values())},
    )
    await conn.execute(
        text(
            "UPDATE position p SET reserved_quantity = p.reserved_quantity + u.q"
            " FROM unnest(CAST(:a AS uuid[]), CAST(:s AS text[]), CAST(:q AS bigint[]))"
            " AS u(a, s, q) WHERE p.account_id = u.a AND p.symbol = u.s"
        ),
        {
            "a": [k[0] for k in shares_by_position],
            "s": [k[1] for k in shares_by_position],
            "q": list(shares_by_position.values()),
        },
    )
    await conn.execute(
        text(
            "INSERT INTO client_order (id, account_id, symbol, side, type, quantity, limit_price,"
            " time_in_force, status, reserved_amount, reserved_quantity, reservation_price,"
            " version, priority_seq)"
            " SELECT id, a, s, side, CASE WHEN p IS NULL THEN 'market' ELSE 'limit' END, q, p,"
            " tif, :status, ra, rq, rp, 1, CASE WHEN :resting THEN ord END"
            " FROM unnest(CAST(:id AS uuid[]), CAST(:a AS uuid[]), CAST(:s AS text[]),"
            " CAST(:side AS text[]), CAST(:q AS bigint[]), CAST(:p AS numeric[]),"
            " CAST(:tif AS text[]), CAST(:ra AS numeric[]), CAST(:rq AS bigint[]),"
            " CAST(:rp AS numeric[])) WITH ORDINALITY"
            " AS u(id, a, s, side, q, p, tif, ra, rq, rp, ord) ORDER BY ord"
        ),
        {
            "status": "new" if resting else "pending_new",
            "resting": resting,
            "id": ids,
            "a": [s.account_id for s in specs],
            "s": [s.symbol for s in specs],
            "side": [s.side for s in specs],
            "q": [s.quantity for s in specs],
            "p": [s.limit_price for s in specs],
            "tif": [s.time_in_force for s in specs],
            "ra": amounts,
            "rq": quantities,
            "rp": collars,
        },
    )
    if resting:
        return []
    now = datetime.now(UTC)
    commands = [
        OrderCommand(type="new_order", order_id=i, symbol=s.symbol, version=1, ts=now)
        for i, s in zip(ids, specs, strict=True)
    ]
    payloads = [c.model_dump_json(exclude={"outbox_id"}) for c in commands]
    streams = [order_stream_for(c.symbol, shards) for c in commands]
    rows = await conn.execute(
        text(
            "INSERT INTO outbox (stream, payload)"
            " SELECT * FROM unnest(CAST(:s AS text[]), CAST(:p AS text[]))"
            " RETURNING id, payload"
        ),
        {"s": streams, "p": payloads},
    )
    outbox = {payload: outbox_id for outbox_id, payload in rows.all()}
    return [
        Sent(stream, command.model_copy(update={"outbox_id": outbox[payload]}))
        for stream, command, payload in zip(streams, commands, payloads, strict=True)
    ]
