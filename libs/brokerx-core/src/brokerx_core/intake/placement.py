"""Place a new order in the caller's transaction (docs/trading.md, "Intake"): the market
maker's path and the single-order form of `IntakeBatcher`. The caller commits, then
publishes the command.

Three round trips: the replay lookup (only with a client_order_id, so that a replay is
answered even when the instrument's band has moved since), the instrument row, and one
call of `intake_place_orders` (migration 0003) for the rest.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.db.base import utcnow
from brokerx_core.intake.errors import IntakeError
from brokerx_core.intake.prepared import (
    ORDER_ARRAY_TYPES,
    Placement,
    instrument_terms,
    outcome_of,
    place_arguments,
    place_sql,
    prepare_order,
    replay_of,
)
from brokerx_core.intake.pretrade import NewOrder
from brokerx_core.intake.records import ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import TradingRules

__all__ = ["Placement", "place_order"]

_BY_CLIENT_ORDER_ID = text(
    f"SELECT {ORDER_COLUMNS} FROM client_order"
    " WHERE account_id = :account AND client_order_id = :client_order_id"
)
_BY_ID = text(f"SELECT {ORDER_COLUMNS} FROM client_order WHERE id = :id")
_INSTRUMENT = text(
    "SELECT symbol, tick_size, reference_price, last_price, status"
    " FROM instrument WHERE symbol = :symbol"
)
_PLACE = text(
    place_sql(
        "intake_place_orders",
        ORDER_ARRAY_TYPES,
        [f":a{n}" for n in range(1, len(ORDER_ARRAY_TYPES) + 1)],
    )
)


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
    rules' limit (the market maker gets a larger one).
    """
    now = now or utcnow()
    if order.client_order_id is not None:
        existing = await _find_by_client_order_id(session, account_id, order.client_order_id)
        if existing is not None:
            return replay_of(existing, order)

    row = (await session.execute(_INSTRUMENT, {"symbol": order.symbol})).first()
    prepared = prepare_order(
        account_id,
        order,
        instrument_terms(dict(row._mapping)) if row is not None else None,
        rules,
        now=now,
        correlation_id=correlation_id,
        max_open_orders=max_open_orders,
    )
    arguments = place_arguments([prepared])
    result = (
        await session.execute(_PLACE, {f"a{i}": value for i, value in enumerate(arguments, 1)})
    ).one()
    existing_orders: dict[uuid.UUID, OrderRecord] = {}
    if result.r_outcome == "replay":
        # A concurrent request took this client_order_id between our lookup and the call.
        found = (await session.execute(_BY_ID, {"id": result.r_order_id})).one()
        existing_orders[result.r_order_id] = OrderRecord.from_row(found)
    outcome = outcome_of(prepared, dict(result._mapping), existing_orders, rules.shards)
    if isinstance(outcome, IntakeError):
        raise outcome
    return outcome


async def _find_by_client_order_id(
    session: AsyncSession, account_id: uuid.UUID, client_order_id: str
) -> OrderRecord | None:
    row = (
        await session.execute(
            _BY_CLIENT_ORDER_ID, {"account": account_id, "client_order_id": client_order_id}
        )
    ).first()
    return OrderRecord.from_row(row) if row is not None else None
