"""A replace request in two round trips on a plain asyncpg connection (the api's path).

Read the order with its instrument (no lock), run the checks in Python
(`amend.plan_replace`), then one autocommitted call of `intake_replace_order`
(migration 0005) locks the order, confirms it is still what was checked, tops up the
reservation and writes the outbox row. When the order moved in between (a fill, another
replace) the call answers `stale` and the request is checked again on a fresh read.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.commands import outbox_payload, stamp
from brokerx_core.db.base import utcnow
from brokerx_core.intake.amend import (
    Amended,
    instrument_of,
    plan_replace,
    replace_command,
)
from brokerx_core.intake.errors import (
    InsufficientFunds,
    InsufficientPosition,
    OrderNotFound,
    VersionConflict,
)
from brokerx_core.intake.pretrade import Amendment
from brokerx_core.intake.records import ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import TradingRules
from brokerx_core.streams import order_stream_for

READ_SQL = (
    f"SELECT {', '.join('o.' + c.strip() for c in ORDER_COLUMNS.split(','))},"
    " i.tick_size, i.reference_price, i.last_price, i.status AS instrument_status"
    " FROM client_order o JOIN instrument i ON i.symbol = o.symbol"
    " WHERE o.id = $1 AND o.account_id = $2"
)
REPLACE_SQL = (
    "SELECT r_outcome, r_outbox_id, r_available, r_reserved_amount, r_reserved_quantity"
    " FROM intake_replace_order($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
# A read-check-write cycle that keeps finding the order moved (fills arriving) gives up.
ATTEMPTS = 3


async def replace_order_on(
    conn: Any,
    *,
    account_id: uuid.UUID,
    order_id: uuid.UUID,
    expected_version: int,
    amendment: Amendment,
    rules: TradingRules,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> Amended:
    """Write a replace on the asyncpg connection `conn` (outside any transaction): the
    order as persisted and the command to publish, or the refusal (`IntakeError`)."""
    now = now or utcnow()
    for _ in range(ATTEMPTS):
        row = await conn.fetchrow(READ_SQL, order_id, account_id)
        if row is None:
            raise OrderNotFound("no such order")
        order = OrderRecord.from_mapping(row)
        plan = plan_replace(order, instrument_of(row), amendment, rules, expected_version, now)
        command = replace_command(
            order, plan, expected_version, now=now, correlation_id=correlation_id
        )
        result = await conn.fetchrow(
            REPLACE_SQL,
            order.id,
            account_id,
            order.version,
            order.filled_quantity,
            order.reserved_amount,
            order.reserved_quantity,
            plan.extra_cash,
            plan.extra_shares,
            order_stream_for(order.symbol, rules.shards),
            outbox_payload(command),
        )
        outcome = result["r_outcome"]
        if outcome == "stale":
            continue
        if outcome == "insufficient_funds":
            raise InsufficientFunds.of(plan.extra_cash, Decimal(result["r_available"]))
        if outcome == "insufficient_position":
            raise InsufficientPosition.of(
                plan.extra_shares, order.symbol, int(result["r_available"])
            )
        order = order.with_reservation(result["r_reserved_amount"], result["r_reserved_quantity"])
        return Amended(order, stamp(command, int(result["r_outbox_id"]), rules.shards))
    raise VersionConflict(
        "the order changed while it was being replaced; read it and try again",
        extra={"version": order.version},
    )
