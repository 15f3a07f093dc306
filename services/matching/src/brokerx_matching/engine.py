"""Applies order commands to the books of one shard; pure of I/O.

`MatchingEngine.apply` takes commands and the order rows they need (loaded by the
consumer) and returns a `Batch`: the final state of each order touched, trades,
execution reports and the symbols whose market data changed. Money is `Decimal` here
and integer ticks inside `OrderBook`. The engine is only ever ahead of PostgreSQL by the
batch being applied: when persisting a batch fails the consumer throws the engine away
and rebuilds it from the database (recovery), so no rollback logic lives here.

Command semantics follow docs/trading.md ("Commands"); DESIGN.md fixes the matching
rules (price-time priority, resting price, collar, ioc/fok, self-trade prevention).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from brokerx_core.messages import OrderCommand
from brokerx_core.money import cash, cash_up, ceil_to_tick, floor_to_tick, from_ticks
from brokerx_matching.book import Fill, MatchResult, OrderBook, Side, TimeInForce
from brokerx_matching.book import OrderState as BookState
from brokerx_matching.reports import execution_report
from brokerx_matching.state import Batch, InstrumentState, OrderState, TradeRecord

_SIDES = {"buy": Side.BUY, "sell": Side.SELL}
_TIFS = {
    "day": TimeInForce.DAY,
    "gtc": TimeInForce.GTC,
    "ioc": TimeInForce.IOC,
    "fok": TimeInForce.FOK,
}
_RESTING_TIFS = ("day", "gtc")
HUNDRED = Decimal(100)

Outcome = Literal["applied", "rejected", "skipped"]


class EngineInconsistency(RuntimeError):
    """Engine memory disagrees with itself (a bug): the batch fails and the shard rebuilds."""


def _command_ref(command: OrderCommand) -> str:
    """What tells two commands on one order apart: the outbox row, else the issue time."""
    return str(command.outbox_id) if command.outbox_id is not None else command.ts.isoformat()


class CommandFailed(Exception):
    """Applying one command raised; carries the command for the poison-message accounting."""

    def __init__(self, command: OrderCommand, cause: BaseException) -> None:
        super().__init__(f"{command.type} {command.order_id}: {cause!r}")
        self.command = command
        self.cause = cause


def price_ticks(value: Decimal, tick_size: Decimal) -> int | None:
    """Integer ticks of an on-tick price, None when the price is off tick."""
    ticks, remainder = divmod(value, tick_size)
    return int(ticks) if not remainder else None


class MatchingEngine:
    """The books of one shard and the open orders resting in them."""

    def __init__(
        self, instruments: Iterable[InstrumentState], *, market_collar_pct: Decimal
    ) -> None:
        self.instruments: dict[str, InstrumentState] = {}
        self.books: dict[str, OrderBook] = {}
        self.orders: dict[uuid.UUID, OrderState] = {}  # resting orders only
        self._collar = market_collar_pct / HUNDRED
        for instrument in instruments:
            self.add_instrument(instrument)

    # ------------------------------------------------------------- recovery

    def add_instrument(self, instrument: InstrumentState) -> None:
        """Start an (empty) book for an instrument the shard did not know."""
        if instrument.symbol not in self.instruments:
            self.instruments[instrument.symbol] = instrument
            self.books[instrument.symbol] = OrderBook()

    def add_resting(self, order: OrderState) -> None:
        """Put a persisted open order back at its persisted priority (no matching)."""
        instrument = self.instruments[order.symbol]
        assert order.limit_price is not None
        assert order.priority_seq is not None
        ticks = price_ticks(order.limit_price, instrument.tick_size)
        if ticks is None:
            raise EngineInconsistency(f"resting order {order.id} is off tick")
        self.books[order.symbol].add_resting(
            order.id,
            order.account_id,
            _SIDES[order.side],
            order.quantity - order.filled_quantity,
            ticks,
            order.priority_seq,
            _TIFS[order.time_in_force],
        )
        self.orders[order.id] = order

    def continue_sequence(self, symbol: str, after: int) -> None:
        """The next resting order of `symbol` gets a priority after `after`."""
        book = self.books[symbol]
        book.next_seq = max(book.next_seq, after + 1)

    def knows(self, order_id: uuid.UUID) -> bool:
        """True when the order rests in a book of this shard (no row to load)."""
        return order_id in self.orders

    # -------------------------------------------------------------- batches

    def apply(
        self,
        commands: Sequence[OrderCommand],
        loaded: Mapping[uuid.UUID, OrderState],
        ts: datetime,
    ) -> Batch:
        """Apply commands in order; `loaded` holds the rows of orders not resting here.

        Raises `CommandFailed` when a command cannot be applied (the batch is lost).
        """
        batch = Batch(ts)
        for command in commands:
            try:
                outcome = self._apply_one(batch, command, loaded)
            except Exception as exc:
                raise CommandFailed(command, exc) from exc
            batch.outcomes.append((command.type, outcome))
            if command.outbox_id is not None:
                batch.outbox_ids.append(command.outbox_id)
        return batch

    def committed(self, batch: Batch) -> None:
        """The batch is in PostgreSQL: start the next one from clean accumulators."""
        for order in batch.orders.values():
            order.cash_op = None
            order.qty_op = None
        for symbol in batch.symbols:
            self.instruments[symbol].traded = False

    def _apply_one(
        self, batch: Batch, command: OrderCommand, loaded: Mapping[uuid.UUID, OrderState]
    ) -> Outcome:
        order_id = command.order_id
        order = batch.orders.get(order_id) or self.orders.get(order_id) or loaded.get(order_id)
        if order is None:
            return "skipped"  # no such order (or another shard's): nothing to change
        if command.type == "new_order":
            return self._new_order(batch, order, command)
        if command.type == "cancel":
            return self._cancel(batch, order, command)
        if command.type == "replace":
            return self._replace(batch, order, command)
        return self._expire(batch, order, command)

    # ------------------------------------------------------------- commands

    def _new_order(self, batch: Batch, order: OrderState, command: OrderCommand) -> Outcome:
        if order.status != "pending_new":
            return "skipped"  # applied before (a replay without its outbox row id)
        instrument = self.instruments.get(order.symbol)
        if instrument is None:
            return self._reject(batch, order, "unknown_symbol", command)
        if instrument.status != "active":
            return self._reject(batch, order, "instrument_halted", command)
        book = self.books[order.symbol]
        side = _SIDES[order.side]
        quantity = order.quantity - order.filled_quantity
        if order.type == "market":
            collar = self._collar_ticks(order, instrument)
            result = book.submit_market(order.id, order.account_id, side, quantity, collar)
        else:
            assert order.limit_price is not None
            ticks = price_ticks(order.limit_price, instrument.tick_size)
            if ticks is None:
                return self._reject(batch, order, "invalid_tick", command)
            tif = _TIFS[order.time_in_force]
            result = book.submit_limit(order.id, order.account_id, side, quantity, ticks, tif)
        batch.touch(order)
        if result.fills or result.state is BookState.RESTED:
            order.status = "new"
            batch.reports.append(
                execution_report(order, "new", batch.ts, correlation_id=command.correlation_id)
            )
        if result.fills:
            batch.first_fills.append(order.created_at)
        self._settle(batch, order, instrument, result, command.correlation_id)
        return "applied"

    def _cancel(self, batch: Batch, order: OrderState, command: OrderCommand) -> Outcome:
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
        self._take_out(batch, order)
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

    def _expire(self, batch: Batch, order: OrderState, command: OrderCommand) -> Outcome:
        if not order.is_open or order.time_in_force != "day":
            return "skipped"
        self._take_out(batch, order)
        order.status = "expired"
        batch.touch(order)
        batch.reports.append(
            execution_report(order, "expired", batch.ts, correlation_id=command.correlation_id)
        )
        return "applied"

    def _replace(self, batch: Batch, order: OrderState, command: OrderCommand) -> Outcome:
        instrument = self.instruments.get(order.symbol)
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
        elif order.status != "pending_new" and new_tif not in _RESTING_TIFS:
            reason = "invalid_time_in_force"  # a resting order can only become day or gtc
        elif new_tif not in _TIFS:
            reason = "invalid_time_in_force"
        else:
            new_ticks = price_ticks(new_price, instrument.tick_size)
            if new_ticks is None:
                reason = "invalid_tick"
        if reason is not None:
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
        leaves = new_quantity - order.filled_quantity
        if order.is_buy:
            order.cash_reservation().cap(cash_up(leaves * new_price))
        else:
            order.quantity_reservation().cap(leaves)
        batch.touch(order)
        batch.reports.append(
            execution_report(order, "replaced", batch.ts, correlation_id=command.correlation_id)
        )
        if order.status == "pending_new":
            return "applied"  # enters the book with these terms when its new_order arrives
        if order.id not in self.orders:
            raise EngineInconsistency(f"open order {order.id} is not resting")
        book = self.books[order.symbol]
        result = book.replace(order.id, leaves, new_ticks, _TIFS[new_tif])
        if result.state is BookState.UNKNOWN:
            raise EngineInconsistency(f"order {order.id} is not in the {order.symbol} book")
        if result.fills:
            batch.first_fills.append(order.created_at)
        self._settle(batch, order, instrument, result, command.correlation_id)
        return "applied"

    def _reject(
        self, batch: Batch, order: OrderState, reason: str, command: OrderCommand
    ) -> Outcome:
        order.status = "rejected"
        order.reject_reason = reason
        batch.touch(order)
        batch.reports.append(
            execution_report(
                order, "rejected", batch.ts, reason=reason, correlation_id=command.correlation_id
            )
        )
        return "rejected"

    # -------------------------------------------------------------- helpers

    def _take_out(self, batch: Batch, order: OrderState) -> None:
        """Remove an order from its book (if it rests) before it becomes terminal."""
        if self.orders.pop(order.id, None) is not None:
            self.books[order.symbol].cancel(order.id)
            batch.symbols.add(order.symbol)

    def _collar_ticks(self, order: OrderState, instrument: InstrumentState) -> int:
        """The market order's protective limit, rounded to the tick away from the reference.

        A market buy trades up to the collar the api reserved cash for
        (`reservation_price`), so the reservation always covers what it can pay.
        """
        tick = instrument.tick_size
        if order.is_buy:
            if order.reservation_price is None:  # intake always sets it; be safe anyway
                collar = ceil_to_tick(instrument.reference * (1 + self._collar), tick)
                order.reservation_price = collar
            return int((order.reservation_price / tick).to_integral_value(rounding=ROUND_DOWN))
        collar = floor_to_tick(instrument.reference * (1 - self._collar), tick)
        return max(1, int(collar / tick))

    def _settle(
        self,
        batch: Batch,
        order: OrderState,
        instrument: InstrumentState,
        result: MatchResult,
        correlation_id: str | None,
    ) -> None:
        """Turn the book's result for an incoming order into trades, states and reports."""
        symbol = order.symbol
        for fill in result.fills:
            self._trade(batch, order, instrument, fill, correlation_id)
        state = result.state
        if state is BookState.RESTED:
            order.status = "partially_filled" if order.filled_quantity else "new"
            order.priority_seq = result.priority_seq
            self.orders[order.id] = order
            batch.symbols.add(symbol)
        elif state is BookState.FILLED:
            order.status = "filled"
            self.orders.pop(order.id, None)
        else:
            self.orders.pop(order.id, None)
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
        self,
        batch: Batch,
        incoming: OrderState,
        instrument: InstrumentState,
        fill: Fill,
        correlation_id: str | None,
    ) -> None:
        resting_id, _account, _incoming_id, ticks, quantity, resting_leaves = fill
        resting = self.orders.get(resting_id)  # type: ignore[call-overload]
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
            del self.orders[resting.id]
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
