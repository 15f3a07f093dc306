"""Replace requests on a plain asyncpg connection (the api's path), one or many at a time.

Read the order with its instrument (no lock), run the checks in Python
(`amend.plan_replace`), then one autocommitted call locks the order, confirms it is still
what was checked, tops up the reservation and writes the outbox row. When the order
moved in between (a fill, another replace) the call answers `stale` and the request is
checked again on a fresh read.

`replace_order_on` does that for one request (`intake_replace_order`, migration 0005).
`replace_orders` does it for a group commit's requests in two round trips
(`intake_replace_orders`, 0008): one read of every order, one call for every request that
passed its checks. The requests that call could not settle (`stale`, `busy`: the order
was locked elsewhere, and the batch call does not wait) and a second request for an
order already in the call go through `replace_order_on`, one at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.commands import outbox_payload, stamp
from brokerx_core.db.base import utcnow
from brokerx_core.intake.amend import (
    Amended,
    ReplacePlan,
    instrument_of,
    plan_replace,
    replace_command,
)
from brokerx_core.intake.errors import (
    InsufficientFunds,
    InsufficientPosition,
    IntakeError,
    OrderNotFound,
    VersionConflict,
)
from brokerx_core.intake.pretrade import Amendment
from brokerx_core.intake.records import ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import TradingRules
from brokerx_core.messages import OrderCommand
from brokerx_core.streams import order_stream_for

_SELECT = (
    f"SELECT {', '.join('o.' + c.strip() for c in ORDER_COLUMNS.split(','))},"
    " i.tick_size, i.reference_price, i.last_price, i.status AS instrument_status"
    " FROM client_order o JOIN instrument i ON i.symbol = o.symbol"
)
READ_SQL = f"{_SELECT} WHERE o.id = $1 AND o.account_id = $2"
READ_MANY_SQL = f"{_SELECT} WHERE o.id = ANY($1::uuid[])"
_RESULT = "r_outcome, r_outbox_id, r_available, r_reserved_amount, r_reserved_quantity"
REPLACE_SQL = f"SELECT {_RESULT} FROM intake_replace_order($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
REPLACE_MANY_SQL = (
    f"SELECT r_index, {_RESULT} FROM intake_replace_orders($1::uuid[], $2::uuid[],"
    " $3::integer[], $4::bigint[], $5::numeric[], $6::bigint[], $7::numeric[], $8::bigint[],"
    " $9::text[], $10::text[])"
)
# A read-check-write cycle that keeps finding the order moved (fills arriving) gives up.
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ReplaceRequest:
    """One PATCH: the order, the version the client saw (If-Match) and the new terms."""

    account_id: uuid.UUID
    order_id: uuid.UUID
    expected_version: int
    amendment: Amendment
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request that passed its checks against the order as read."""

    order: OrderRecord
    plan: ReplacePlan
    command: OrderCommand

    def arguments(self, shards: int) -> tuple[Any, ...]:
        """The call's arguments after the account (the order as checked, the top-up)."""
        order = self.order
        return (
            order.version,
            order.filled_quantity,
            order.reserved_amount,
            order.reserved_quantity,
            self.plan.extra_cash,
            self.plan.extra_shares,
            order_stream_for(order.symbol, shards),
            outbox_payload(self.command),
        )


def _check(row: Any, request: ReplaceRequest, rules: TradingRules, now: datetime) -> _Checked:
    order = OrderRecord.from_mapping(row)
    plan = plan_replace(
        order, instrument_of(row), request.amendment, rules, request.expected_version, now
    )
    command = replace_command(
        order, plan, request.expected_version, now=now, correlation_id=request.correlation_id
    )
    return _Checked(order, plan, command)


def _settled(checked: _Checked, result: Any, shards: int) -> Amended | IntakeError | None:
    """What a call's result row means for the request: written, refused, or None when
    the order was not as checked (`stale`) or not lockable at once (`busy`)."""
    outcome = result["r_outcome"]
    if outcome == "insufficient_funds":
        return InsufficientFunds.of(checked.plan.extra_cash, Decimal(result["r_available"]))
    if outcome == "insufficient_position":
        return InsufficientPosition.of(
            checked.plan.extra_shares, checked.order.symbol, int(result["r_available"])
        )
    if outcome != "accepted":
        return None
    order = checked.order.with_reservation(
        result["r_reserved_amount"], result["r_reserved_quantity"]
    )
    return Amended(order, stamp(checked.command, int(result["r_outbox_id"]), shards))


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
    request = ReplaceRequest(account_id, order_id, expected_version, amendment, correlation_id)
    now = now or utcnow()
    version = None
    for _ in range(ATTEMPTS):
        row = await conn.fetchrow(READ_SQL, order_id, account_id)
        if row is None:
            raise OrderNotFound("no such order")
        checked = _check(row, request, rules, now)
        version = checked.order.version
        result = await conn.fetchrow(
            REPLACE_SQL, order_id, account_id, *checked.arguments(rules.shards)
        )
        outcome = _settled(checked, result, rules.shards)
        if isinstance(outcome, IntakeError):
            raise outcome
        if outcome is not None:
            return outcome
    raise VersionConflict(
        "the order changed while it was being replaced; read it and try again",
        extra={"version": version},
    )


async def replace_orders(
    conn: Any, requests: Sequence[ReplaceRequest], *, rules: TradingRules, now: datetime
) -> list[Amended | IntakeError]:
    """Write the replaces of `requests` on `conn` (autocommit); each request's outcome,
    in order: the order as persisted with the command to publish, or the refusal."""
    outcomes: list[Amended | IntakeError | None] = [None] * len(requests)
    rows = await conn.fetch(READ_MANY_SQL, list({r.order_id for r in requests}))
    orders = {row["id"]: row for row in rows}
    checked: dict[uuid.UUID, tuple[int, _Checked]] = {}
    alone: list[int] = []  # settled one at a time, after the call
    for index, request in enumerate(requests):
        row = orders.get(request.order_id)
        if row is None or row["account_id"] != request.account_id:
            outcomes[index] = OrderNotFound("no such order")
        elif request.order_id in checked:
            alone.append(index)  # the call writes each order once
        else:
            try:
                checked[request.order_id] = (index, _check(row, request, rules, now))
            except IntakeError as exc:
                outcomes[index] = exc
    if checked:
        slots = list(checked.values())
        columns = list(zip(*(c.arguments(rules.shards) for _, c in slots), strict=True))
        results = await conn.fetch(
            REPLACE_MANY_SQL,
            [c.order.id for _, c in slots],
            [requests[index].account_id for index, _ in slots],
            *(list(column) for column in columns),
        )
        for result in results:
            index, item = slots[result["r_index"] - 1]
            outcomes[index] = _settled(item, result, rules.shards)
            if outcomes[index] is None:
                alone.append(index)
    for index in sorted(alone):
        request = requests[index]
        try:
            outcomes[index] = await replace_order_on(
                conn,
                account_id=request.account_id,
                order_id=request.order_id,
                expected_version=request.expected_version,
                amendment=request.amendment,
                rules=rules,
                correlation_id=request.correlation_id,
                now=now,
            )
        except IntakeError as exc:
            outcomes[index] = exc
    settled = [outcome for outcome in outcomes if outcome is not None]
    assert len(settled) == len(requests)
    return settled
