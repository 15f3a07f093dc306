"""What the engine holds in memory and what one batch changes.

Orders and instruments carry `Decimal` money (the engine converts to integer ticks at
the book's edge). A `Batch` is the pure result of applying commands: the final state of
every order it touched, the trades, the reports and the market data to publish. The
persistence layer turns it into SQL; nothing here does I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.messages import OrderCommand
from brokerx_core.money import ZERO, cash_up

OPEN_STATUSES = frozenset({"pending_new", "new", "partially_filled"})
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected"})
AVG_QUANTUM = Decimal("0.000001")  # avg_fill_price / avg_cost are NUMERIC(20, 6)


class ReservationOp:
    """Changes to a reservation the engine makes without knowing its current value.

    The api may top a reservation up while the engine holds the order (docs/trading.md),
    so the engine never writes an absolute value: it records `consume(x)` and
    `cap(n)` operations, which compose into `max(min(R - a, b) - c, 0)` where `R` is the
    value in the locked row at commit time (`b` None = no cap). `max(…, 0)` is the
    "capped at what is left on the order" rule.
    """

    __slots__ = ("a", "b", "c")

    def __init__(self) -> None:
        self.a: Decimal | int = 0
        self.b: Decimal | int | None = None
        self.c: Decimal | int = 0

    def consume(self, amount: Decimal | int) -> None:
        self.c += amount

    def cap(self, limit: Decimal | int) -> None:
        """Lower the reservation to at most `limit` (never raise it)."""
        bound = limit if self.b is None else min(self.b - self.c, limit)
        self.a += self.c
        self.b = bound
        self.c = 0

    def apply_to(self, current: Decimal | int) -> Decimal | int:
        """The value the SQL computes from `current` (for tests and the reference model)."""
        value = current - self.a
        if self.b is not None:
            value = min(value, self.b)
        return max(value - self.c, 0)


@dataclass(slots=True, eq=False)
class InstrumentState:
    symbol: str
    tick_size: Decimal
    reference_price: Decimal
    status: str
    last_price: Decimal | None = None
    last_size: int | None = None
    last_trade_at: datetime | None = None
    # Set when a trade of this batch moved `last_price` (persisted with the batch).
    traded: bool = False

    @property
    def reference(self) -> Decimal:
        """Reference price for collars: the last trade, else the seeded reference."""
        return self.last_price if self.last_price is not None else self.reference_price


@dataclass(slots=True, eq=False)
class OrderState:
    """One order as the engine sees it (the columns of `client_order` it needs)."""

    id: uuid.UUID
    account_id: uuid.UUID
    client_id: uuid.UUID
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    quantity: int
    limit_price: Decimal | None
    time_in_force: str
    status: str
    filled_quantity: int
    fill_notional: Decimal  # Σ price × quantity of its fills (exact while in memory)
    version: int
    reservation_price: Decimal | None
    priority_seq: int | None
    created_at: datetime
    correlation_id: str | None
    reject_reason: str | None
    # Per-batch accumulators, reset after each commit.
    cash_op: ReservationOp | None = None
    qty_op: ReservationOp | None = None

    @property
    def is_buy(self) -> bool:
        return self.side == "buy"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def leaves_quantity(self) -> int:
        return 0 if self.is_terminal else self.quantity - self.filled_quantity

    @property
    def avg_fill_price(self) -> Decimal | None:
        if not self.filled_quantity:
            return None
        return (self.fill_notional / self.filled_quantity).quantize(AVG_QUANTUM)

    def cash_reservation(self) -> ReservationOp:
        if self.cash_op is None:
            self.cash_op = ReservationOp()
        return self.cash_op

    def quantity_reservation(self) -> ReservationOp:
        if self.qty_op is None:
            self.qty_op = ReservationOp()
        return self.qty_op

    def cap_reservation_to_terms(self) -> None:
        """Lower the reservation to what the leaves need at the current terms: the cash
        at the limit (a market buy: its collar price), or the shares of a sell."""
        leaves = self.quantity - self.filled_quantity
        if not self.is_buy:
            self.quantity_reservation().cap(leaves)
            return
        basis = self.limit_price if self.type == "limit" else self.reservation_price
        if basis is not None:
            self.cash_reservation().cap(cash_up(leaves * basis))


@dataclass(frozen=True, slots=True)
class TradeRecord:
    id: uuid.UUID
    symbol: str
    price: Decimal
    quantity: int
    notional: Decimal  # price × quantity rounded half-even to the cent
    buy_order_id: uuid.UUID
    sell_order_id: uuid.UUID
    buyer_account_id: uuid.UUID
    seller_account_id: uuid.UUID
    aggressor_side: str


@dataclass(frozen=True, slots=True)
class Command:
    """A command to apply: from a stream entry (`entry_id`) or from recovery (None)."""

    command: OrderCommand
    entry_id: bytes | None = None


@dataclass(slots=True, eq=False)
class Batch:
    """Everything one batch changed, in the order it happened."""

    ts: datetime
    orders: dict[uuid.UUID, OrderState] = field(default_factory=dict)
    trades: list[TradeRecord] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)  # see reports.py
    outbox_ids: list[int] = field(default_factory=list)
    symbols: set[str] = field(default_factory=set)  # books changed (market data to send)
    # created_at of incoming orders at their first fill (intake-to-fill latency).
    first_fills: list[datetime] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (type, outcome)
    # Open orders that may hold more reservation than their terms need: the api topped
    # it up for a replace the engine rejected. Capped at commit (persistence.py) unless
    # another replace of the order is still in the outbox (it may need that top-up).
    excess_reservations: set[uuid.UUID] = field(default_factory=set)

    def touch(self, order: OrderState) -> None:
        self.orders[order.id] = order

    @property
    def empty(self) -> bool:
        return not (self.orders or self.outbox_ids)


def new_order_state(row: Sequence[Any]) -> OrderState:
    """Build an `OrderState` from a row with the columns of `persistence.ORDER_COLUMNS`."""
    # Positional unpacking: recovery builds 100k of these and attribute lookups add up.
    (
        order_id,
        account_id,
        client_id,
        client_order_id,
        symbol,
        side,
        order_type,
        quantity,
        limit_price,
        time_in_force,
        status,
        filled,
        avg,
        version,
        reservation_price,
        priority_seq,
        created_at,
        correlation_id,
        reject_reason,
    ) = row
    return OrderState(
        order_id,
        account_id,
        client_id,
        client_order_id,
        symbol,
        side,
        order_type,
        quantity,
        limit_price,
        time_in_force,
        status,
        filled,
        # The exact notional is not persisted; avg × filled is exact to 6 decimals.
        (avg * filled) if avg is not None else ZERO,
        version,
        reservation_price,
        priority_seq,
        created_at,
        correlation_id,
        reject_reason,
    )
