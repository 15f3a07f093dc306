"""Applies order commands to the books of one shard; pure of I/O.

`MatchingEngine.apply` takes commands and the order rows they need (loaded by the
consumer) and returns a `Batch`: the final state of each order touched, trades,
execution reports and the symbols whose market data changed. Money is `Decimal` here
and integer ticks inside `OrderBook`. The engine is only ever ahead of PostgreSQL by the
batch being applied: when persisting a batch fails the consumer throws the engine away
and rebuilds it from the database (recovery), so no rollback logic lives here.

This module is the shard's memory (instruments, books, resting orders), its rebuilding
and the bookkeeping of a batch (outcomes, outbox ids, clean-up once committed). The
rules of each command are in commands.py, what a match does to the orders (trades,
fills, their reports) in fills.py, and what they share in engine_types.py.

Command semantics follow docs/trading.md ("Commands"); DESIGN.md fixes the matching
rules (price-time priority, resting price, collar, ioc/fok, self-trade prevention).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from brokerx_core.messages import OrderCommand
from brokerx_matching.book import OrderBook
from brokerx_matching.commands import apply_command
from brokerx_matching.engine_types import SIDES, TIFS, EngineInconsistency, price_ticks
from brokerx_matching.state import Batch, InstrumentState, OrderState

HUNDRED = Decimal(100)


class CommandFailed(Exception):
    """Applying one command raised; carries the command for the poison-message accounting."""

    def __init__(self, command: OrderCommand, cause: BaseException) -> None:
        super().__init__(f"{command.type} {command.order_id}: {cause!r}")
        self.command = command
        self.cause = cause


class MatchingEngine:
    """The books of one shard and the open orders resting in them."""

    def __init__(
        self, instruments: Iterable[InstrumentState], *, market_collar_pct: Decimal
    ) -> None:
        self.instruments: dict[str, InstrumentState] = {}
        self.books: dict[str, OrderBook] = {}
        self.orders: dict[uuid.UUID, OrderState] = {}  # resting orders only
        self.market_collar = market_collar_pct / HUNDRED  # of the reference price
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
            SIDES[order.side],
            order.quantity - order.filled_quantity,
            ticks,
            order.priority_seq,
            TIFS[order.time_in_force],
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
                outcome = apply_command(self, batch, command, loaded)
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

    # ------------------------------------------------------- shared by commands

    def take_out(self, batch: Batch, order: OrderState) -> None:
        """Remove an order from its book (if it rests) before it becomes terminal."""
        if self.orders.pop(order.id, None) is not None:
            self.books[order.symbol].cancel(order.id)
            batch.symbols.add(order.symbol)
