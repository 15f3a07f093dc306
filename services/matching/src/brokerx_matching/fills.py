"""What matching does to the orders: trades, fills, order states and their reports.

`settle` turns the book's `MatchResult` for an incoming (new or replaced) order into
the batch's effects: one `TradeRecord` per fill with both orders' filled quantity,
notional and reservations updated, the instrument's last trade, the orders' new
statuses, which of them rest in `resting_orders` (the engine's in-memory open orders),
and the fill, partial fill and cancel execution reports. Money goes from the book's
integer ticks back to `Decimal` here.
"""

from __future__ import annotations

import uuid
from typing import Literal

from brokerx_core.money import cash, cash_up, from_ticks
from brokerx_matching.book import Fill, MatchResult
from brokerx_matching.book import OrderState as BookState
from brokerx_matching.engine_types import EngineInconsistency
from brokerx_matching.reports import execution_report
from brokerx_matching.state import Batch, InstrumentState, OrderState, TradeRecord


def settle(
    batch: Batch,
    resting_orders: dict[uuid.UUID, OrderState],
    order: OrderState,
    instrument: InstrumentState,
    result: MatchResult,
    correlation_id: str | None,
) -> None:
    """Turn the book's result for an incoming order into trades, states and reports."""
    symbol = order.symbol
    for fill in result.fills:
        _trade(batch, resting_orders, order, instrument, fill, correlation_id)
    state = result.state
    if state is BookState.RESTED:
        order.status = "partially_filled" if order.filled_quantity else "new"
        order.priority_seq = result.priority_seq
        resting_orders[order.id] = order
        batch.symbols.add(symbol)
    elif state is BookState.FILLED:
        order.status = "filled"
        resting_orders.pop(order.id, None)
    else:
        resting_orders.pop(order.id, None)
        reason = str(result.cancel_reason)
        order.status = "canceled"
        order.reject_reason = reason
        batch.reports.append(
            execution_report(
                order, "canceled", batch.ts, reason=reason, correlation_id=correlation_id
            )
        )
    if result.fills:
        batch.symbols.add(symbol)


def _trade(
    batch: Batch,
    resting_orders: dict[uuid.UUID, OrderState],
    incoming: OrderState,
    instrument: InstrumentState,
    fill: Fill,
    correlation_id: str | None,
) -> None:
    """One fill: the trade, both orders' fills and reservations, the last trade, reports."""
    resting_id, _account, _incoming_id, ticks, quantity, resting_leaves = fill
    resting = resting_orders.get(resting_id)  # type: ignore[call-overload]
    if resting is None:
        raise EngineInconsistency(f"filled order {resting_id} is not in memory")
    price = from_ticks(ticks, instrument.tick_size)
    exact = price * quantity
    if incoming.is_buy:
        buy, sell = incoming, resting
    else:
        buy, sell = resting, incoming
    trade = TradeRecord(
        uuid.uuid4(),
        incoming.symbol,
        price,
        quantity,
        cash(exact),
        buy.id,
        sell.id,
        buy.account_id,
        sell.account_id,
        incoming.side,
    )
    batch.trades.append(trade)
    for order in (buy, sell):
        order.filled_quantity += quantity
        order.fill_notional += exact
    # The buyer's reservation is consumed at the price it was reserved at (limit, or
    # the collar for a market buy); paying less than that simply frees the rest.
    basis = buy.limit_price if buy.type == "limit" else buy.reservation_price
    assert basis is not None
    buy.cash_reservation().consume(cash_up(quantity * basis))
    sell.quantity_reservation().consume(quantity)
    if resting_leaves == 0:
        resting.status = "filled"
        del resting_orders[resting.id]
    else:
        resting.status = "partially_filled"
    incoming.status = (
        "filled" if incoming.filled_quantity == incoming.quantity else "partially_filled"
    )
    batch.touch(resting)
    instrument.last_price = price
    instrument.last_size = quantity
    instrument.last_trade_at = batch.ts
    instrument.traded = True
    for order, corr in ((incoming, correlation_id), (resting, None)):
        event: Literal["fill", "partial_fill"] = (
            "fill" if order.status == "filled" else "partial_fill"
        )
        batch.reports.append(
            execution_report(
                order,
                event,
                batch.ts,
                fill_price=price,
                fill_quantity=quantity,
                trade_id=trade.id,
                correlation_id=corr,
            )
        )
