"""One order ready for `intake_place_orders`: checked against its instrument, reservation
sized, command built; and the reading of the outcome the function returns for it.

Shared by `place_order` (one order in the caller's transaction) and `IntakeBatcher`
(many concurrent requests' orders in one call). The SQL function (migration 0003)
does the part that needs rows of the account: replay lookup, open-order cap, the
guarded reservation, the order and outbox rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brokerx_core.commands import PendingCommand, order_command, outbox_payload, stamp
from brokerx_core.intake.errors import (
    ClientOrderIdReused,
    InsufficientFunds,
    InsufficientPosition,
    IntakeError,
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
from brokerx_core.intake.records import OrderRecord
from brokerx_core.intake.rules import TradingRules
from brokerx_core.messages import OrderCommand
from brokerx_core.streams import order_stream_for

# asyncpg form; `placement` wraps the same call for SQLAlchemy sessions.
PLACE_ORDERS_SQL = (
    "SELECT r_index, r_outcome, r_order_id, r_outbox_id, r_available, r_created_at"
    " FROM intake_place_orders($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::bigint[], $8::numeric[], $9::text[], $10::numeric[], $11::bigint[],"
    " $12::numeric[], $13::text[], $14::text[], $15::text[], $16::text[], $17::integer[])"
)
INSTRUMENTS_SQL = (
    "SELECT symbol, tick_size, reference_price, last_price, status"
    " FROM instrument WHERE symbol = ANY($1::text[])"
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


@dataclass(frozen=True, slots=True)
class PreparedOrder:
    """An order that passed the instrument checks, with what intake will write for it."""

    account_id: uuid.UUID
    order: NewOrder
    order_id: uuid.UUID
    reservation: Reservation
    command: OrderCommand
    stream: str
    cap: int
    correlation_id: str | None
    request_hash: str  # of `order`, computed once

    @property
    def lock_key(self) -> tuple[int, bytes, str]:
        """Where its reservation takes a row lock, in the engine's lock order: accounts
        (buys) by id, then positions (sells) by (account, symbol)."""
        if self.order.side == "buy":
            return (0, self.account_id.bytes, "")
        return (1, self.account_id.bytes, self.order.symbol)


def instrument_terms(row: Mapping[str, Any]) -> InstrumentTerms:
    """What intake needs of an instrument row (symbol, tick, prices, status)."""
    return InstrumentTerms(
        row["symbol"], row["tick_size"], row["reference_price"], row["last_price"], row["status"]
    )


def prepare_order(
    account_id: uuid.UUID,
    order: NewOrder,
    instrument: InstrumentTerms | None,
    rules: TradingRules,
    *,
    now: datetime,
    correlation_id: str | None = None,
    max_open_orders: int | None = None,
) -> PreparedOrder:
    """Run the checks that need only the instrument; raise an `IntakeError` when one fails."""
    if instrument is None:
        raise UnknownSymbol(f"unknown symbol {order.symbol}")
    check_tradable(instrument, rules, now)
    if order.limit_price is not None:
        check_limit_price(order.limit_price, instrument, rules)
    order_id = uuid.uuid4()
    return PreparedOrder(
        account_id=account_id,
        order=order,
        order_id=order_id,
        reservation=reservation_for(order, instrument, rules),
        command=order_command(
            "new_order", order_id, order.symbol, 1, ts=now, correlation_id=correlation_id
        ),
        stream=order_stream_for(order.symbol, rules.shards),
        cap=rules.max_open_orders if max_open_orders is None else max_open_orders,
        correlation_id=correlation_id,
        request_hash=order.request_hash(),
    )


def place_arguments(prepared: Sequence[PreparedOrder]) -> list[list[Any]]:
    """The 17 arrays of `intake_place_orders`, one element per order, in call order."""
    return [
        [p.order_id for p in prepared],
        [p.account_id for p in prepared],
        [p.order.client_order_id for p in prepared],
        [p.order.symbol for p in prepared],
        [p.order.side for p in prepared],
        [p.order.type for p in prepared],
        [p.order.quantity for p in prepared],
        [p.order.limit_price for p in prepared],
        [p.order.time_in_force for p in prepared],
        [p.reservation.cash for p in prepared],
        [p.reservation.shares for p in prepared],
        [p.reservation.price for p in prepared],
        [p.request_hash for p in prepared],
        [p.correlation_id for p in prepared],
        [p.stream for p in prepared],
        [outbox_payload(p.command) for p in prepared],
        [p.cap for p in prepared],
    ]


def replay_of(existing: OrderRecord, order: NewOrder) -> Placement:
    """The answer to a `client_order_id` seen before: the same order, or 409 when the
    terms differ."""
    if existing.request_hash != order.request_hash():
        raise ClientOrderIdReused(
            f"client_order_id {order.client_order_id!r} was already used for another order",
            extra={"order_id": str(existing.id)},
        )
    return Placement(existing, None)


def outcome_of(
    prepared: PreparedOrder,
    row: Mapping[str, Any],
    existing: Mapping[uuid.UUID, OrderRecord],
    shards: int,
) -> Placement | IntakeError:
    """The placement (or the refusal) that one row of `intake_place_orders` means.

    `existing` holds the orders that `replay` rows name.
    """
    outcome = row["r_outcome"]
    if outcome == "accepted":
        return Placement(
            accepted_record(prepared, row["r_created_at"]),
            stamp(prepared.command, int(row["r_outbox_id"]), shards),
        )
    if outcome == "replay":
        try:
            return replay_of(existing[row["r_order_id"]], prepared.order)
        except IntakeError as exc:
            return exc
    if outcome == "too_many_open_orders":
        return TooManyOpenOrders(f"an account may hold at most {prepared.cap} open orders")
    available = row["r_available"]
    if outcome == "insufficient_funds":
        return InsufficientFunds.of(prepared.reservation.cash, available)
    if outcome == "insufficient_position":
        return InsufficientPosition.of(
            prepared.reservation.shares, prepared.order.symbol, int(available)
        )
    raise ValueError(f"intake_place_orders returned an unknown outcome {outcome!r}")


def accepted_record(prepared: PreparedOrder, created_at: datetime) -> OrderRecord:
    """The order row the function just wrote (no need to read it back)."""
    order = prepared.order
    return OrderRecord(
        id=prepared.order_id,
        account_id=prepared.account_id,
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        type=order.type,
        quantity=order.quantity,
        limit_price=order.limit_price,
        time_in_force=order.time_in_force,
        status="pending_new",
        filled_quantity=0,
        avg_fill_price=None,
        reserved_amount=prepared.reservation.cash,
        reserved_quantity=prepared.reservation.shares,
        version=1,
        reject_reason=None,
        request_hash=prepared.request_hash,
        created_at=created_at,
        updated_at=created_at,
    )
