"""The rules of each order command: what it checks, what it changes, what it reports.

`apply_command` finds the order a command is about and applies `new_order`, `cancel`,
`replace` or `expire` to it (docs/trading.md, "Commands"): the checks that reject it
(with their reasons), the conversion of its terms to the book's ticks, the market
order's collar, the call into the symbol's `OrderBook`, and the execution reports of
acceptance, rejection, cancelation and expiry. What the book's result does to the orders
(trades, fills) is fills.py's; the engine's memory and batches are engine.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING

from brokerx_core.messages import OrderCommand
from brokerx_core.money import ceil_to_tick, floor_to_tick
from brokerx_matching.book import OrderState as BookState
from brokerx_matching.engine_types import (
    RESTING_TIFS,
    SIDES,
    TIFS,
    EngineInconsistency,
    Outcome,
    price_ticks,
)
from brokerx_matching.fills import settle
from brokerx_matching.reports import execution_report
from brokerx_matching.state import Batch, InstrumentState, OrderState

if TYPE_CHECKING:
    from brokerx_matching.engine import MatchingEngine


def apply_command(
    engine: MatchingEngine,
    batch: Batch,
    command: OrderCommand,
    loaded: Mapping[uuid.UUID, OrderState],
) -> Outcome:
    """Apply one command; `loaded` holds the rows of orders not resting in the engine."""
    order_id = command.order_id
    order = batch.orders.get(order_id) or engine.orders.get(order_id) or loaded.get(order_id)
    if order is None:
        return "skipped"  # no such order (or another shard's): nothing to change
    if command.type == "new_order":
        return _new_order(engine, batch, order, command)
    if command.type == "cancel":
        return _cancel(engine, batch, order, command)
    if command.type == "replace":
        return _replace(engine, batch, order, command)
    return _expire(engine, batch, order, command)


def _new_order(
    engine: MatchingEngine, batch: Batch, order: OrderState, command: OrderCommand
) -> Outcome:
    if order.status != "pending_new":
        return "skipped"  # applied before (a replay without its outbox row id)
    instrument = engine.instruments.get(order.symbol)
    if instrument is None:
        return _reject(batch, order, "unknown_symbol", command)
    if instrument.status != "active":
        return _reject(batch, order, "instrument_halted", command)
    book = engine.books[order.symbol]
    side = SIDES[order.side]
    quantity = order.quantity - order.filled_quantity
    if order.type == "market":
        collar = _collar_ticks(order, instrument, engine.market_collar)
        tif = TIFS[order.time_in_force]  # fok: all within the collar or nothing
        result = book.submit_market(order.id, order.account_id, side, quantity, collar, tif)
    else:
        assert order.limit_price is not None
        ticks = price_ticks(order.limit_price, instrument.tick_size)
        if ticks is None:
            return _reject(batch, order, "invalid_tick", command)
        tif = TIFS[order.time_in_force]
        result = book.submit_limit(order.id, order.account_id, side, quantity, ticks, tif)
    batch.touch(order)
    if result.fills or result.state is BookState.RESTED:
        order.status = "new"
        batch.reports.append(
            execution_report(order, "new", batch.ts, correlation_id=command.correlation_id)
        )
    if result.fills:
        batch.first_fills.append(order.created_at)
    settle(batch, engine.orders, order, instrument, result, command.correlation_id)
    return "applied"


def _cancel(
    engine: MatchingEngine, batch: Batch, order: OrderState, command: OrderCommand
) -> Outcome:
    if order.is_terminal:
        batch.reports.append(
            execution_report(
                order,
                "cancel_rejected",
                batch.ts,
                reason="too_late",
                correlation_id=command.correlation_id,
                command_ref=_command_ref(command),
            )
        )
        return "rejected"
    engine.take_out(batch, order)
    order.status = "canceled"
    batch.touch(order)
    batch.reports.append(
        execution_report(
            order,
            "canceled",
            batch.ts,
            reason="requested",
            correlation_id=command.correlation_id,
        )
    )
    return "applied"


def _expire(
    engine: MatchingEngine, batch: Batch, order: OrderState, command: OrderCommand
) -> Outcome:
    if not order.is_open or order.time_in_force != "day":
        return "skipped"
    engine.take_out(batch, order)
    order.status = "expired"
    batch.touch(order)
    batch.reports.append(
        execution_report(order, "expired", batch.ts, correlation_id=command.correlation_id)
    )
    return "applied"


def _replace(
    engine: MatchingEngine, batch: Batch, order: OrderState, command: OrderCommand
) -> Outcome:
    instrument = engine.instruments.get(order.symbol)
    new_quantity = command.new_quantity or order.quantity
    new_price = command.new_limit_price or order.limit_price
    new_tif = command.new_time_in_force or order.time_in_force
    reason: str | None = None
    new_ticks: int | None = None
    if order.is_terminal:
        reason = "too_late"
    elif command.version != order.version:
        reason = "version_conflict"
    elif order.type != "limit" or instrument is None or new_price is None:
        reason = "order_not_modifiable"
    elif new_quantity <= order.filled_quantity:
        reason = "quantity_below_filled"
    elif order.status != "pending_new" and new_tif not in RESTING_TIFS:
        reason = "invalid_time_in_force"  # a resting order can only become day or gtc
    elif new_tif not in TIFS:
        reason = "invalid_time_in_force"
    else:
        new_ticks = price_ticks(new_price, instrument.tick_size)
        if new_ticks is None:
            reason = "invalid_tick"
    if reason is not None:
        if order.is_open:
            # The api may have topped the reservation up for the refused terms.
            batch.touch(order)
            batch.excess_reservations.add(order.id)
        batch.reports.append(
            execution_report(
                order,
                "replace_rejected",
                batch.ts,
                reason=reason,
                correlation_id=command.correlation_id,
                command_ref=_command_ref(command),
            )
        )
        return "rejected"
    assert instrument is not None
    assert new_ticks is not None
    assert new_price is not None
    order.version += 1
    order.quantity = new_quantity
    order.limit_price = new_price
    order.time_in_force = new_tif
    # What the new leaves need; the api topped up anything above what the order held.
    order.cap_reservation_to_terms()
    leaves = new_quantity - order.filled_quantity
    batch.touch(order)
    batch.reports.append(
        execution_report(order, "replaced", batch.ts, correlation_id=command.correlation_id)
    )
    if order.status == "pending_new":
        return "applied"  # enters the book with these terms when its new_order arrives
    if order.id not in engine.orders:
        raise EngineInconsistency(f"open order {order.id} is not resting")
    book = engine.books[order.symbol]
    result = book.replace(order.id, leaves, new_ticks, TIFS[new_tif])
    if result.state is BookState.UNKNOWN:
        raise EngineInconsistency(f"order {order.id} is not in the {order.symbol} book")
    if result.fills:
        batch.first_fills.append(order.created_at)
    settle(batch, engine.orders, order, instrument, result, command.correlation_id)
    return "applied"


def _reject(batch: Batch, order: OrderState, reason: str, command: OrderCommand) -> Outcome:
    order.status = "rejected"
    order.reject_reason = reason
    batch.touch(order)
    batch.reports.append(
        execution_report(
            order, "rejected", batch.ts, reason=reason, correlation_id=command.correlation_id
        )
    )
    return "rejected"


def _collar_ticks(order: OrderState, instrument: InstrumentState, market_collar: Decimal) -> int:
    """The market order's protective limit, rounded to the tick away from the reference.

    A market buy trades up to the collar the api reserved cash for
    (`reservation_price`), so the reservation always covers what it can pay.
    `market_collar` is the collar as a fraction of the reference price.
    """
    tick = instrument.tick_size
    if order.is_buy:
        if order.reservation_price is None:  # intake always sets it; be safe anyway
            collar = ceil_to_tick(instrument.reference * (1 + market_collar), tick)
            order.reservation_price = collar
        return int((order.reservation_price / tick).to_integral_value(rounding=ROUND_DOWN))
    collar = floor_to_tick(instrument.reference * (1 - market_collar), tick)
    return max(1, int(collar / tick))


def _command_ref(command: OrderCommand) -> str:
    """What tells two commands on one order apart: the outbox row, else the issue time."""
    return str(command.outbox_id) if command.outbox_id is not None else command.ts.isoformat()
