"""Types of the order book: the public value types and the book's internal nodes.

The value types (sides, time in force, fills, results, views) are immutable and carry
integers only (prices in ticks, quantities in shares); the engine converts to and from
`Decimal` at its edges. `LevelNode` and `OrderNode` are the book's mutable insides:
`OrderBook` never hands them out.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from enum import StrEnum
from typing import NamedTuple


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderState(StrEnum):
    """Where the incoming (or replaced) order stands once the operation is over."""

    RESTED = "rested"
    FILLED = "filled"
    CANCELED = "canceled"
    # `replace` of an order that is not resting (never seen, filled or canceled).
    UNKNOWN = "unknown"


class CancelReason(StrEnum):
    """Why the book canceled the remainder of an incoming order."""

    COLLAR = "collar"  # market order stopped by its protective collar
    NO_LIQUIDITY = "no_liquidity"  # market order emptied the opposite side
    IOC = "ioc"  # immediate-or-cancel remainder
    FOK = "fok"  # fill-or-kill could not fill entirely; nothing traded
    SELF_TRADE = "self_trade"  # next resting order in priority was the same account's


class OrderBookError(ValueError):
    """A call the book refuses because it would corrupt it (a caller bug, not a market event)."""


class DuplicateOrderId(OrderBookError):
    """The order id is already resting in this book."""


class WouldCross(OrderBookError):
    """`add_resting` was given an order that crosses the opposite side."""


class Fill(NamedTuple):
    """One execution between the incoming order and one resting order.

    `price_ticks` is the resting order's price. `resting_leaves_quantity` is what the
    resting order still has in the book after this fill.
    """

    resting_order_id: Hashable
    resting_account: Hashable
    incoming_order_id: Hashable
    price_ticks: int
    quantity: int
    resting_leaves_quantity: int

    @property
    def resting_filled(self) -> bool:
        """True when this fill exhausted the resting order (it left the book)."""
        return self.resting_leaves_quantity == 0


class MatchResult(NamedTuple):
    """Outcome of `submit_limit`, `submit_market` or `replace` for the incoming order.

    `filled_quantity` is what traded during this call (the sum of `fills`);
    `leaves_quantity` is what now rests (0 unless `state` is RESTED);
    `canceled_quantity` is the remainder the book canceled (non-zero only when `state`
    is CANCELED, with `cancel_reason` set). `priority_seq` is the order's time priority
    when it rests.
    """

    order_id: Hashable
    state: OrderState
    fills: Sequence[Fill]
    filled_quantity: int
    leaves_quantity: int
    canceled_quantity: int
    cancel_reason: CancelReason | None
    priority_seq: int | None


class CancelResult(NamedTuple):
    """Outcome of `cancel`: whether the order was resting and how much it had left."""

    order_id: Hashable
    was_resting: bool
    leaves_quantity: int


class RestingOrder(NamedTuple):
    """A read-only view of one resting order (for `get` and snapshots)."""

    order_id: Hashable
    account: Hashable
    side: Side
    price_ticks: int
    leaves_quantity: int
    priority_seq: int
    time_in_force: TimeInForce


class Depth(NamedTuple):
    """Aggregated levels, best first: lists of (price_ticks, total_quantity)."""

    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


# ------------------------------------------------------------ internal nodes


class LevelNode:
    """One price level: an intrusive doubly linked FIFO of orders and their total.

    `key` is the price for bids and minus the price for asks (see `OrderBook`).
    """

    __slots__ = ("price", "key", "quantity", "head", "tail")

    def __init__(self, price: int, key: int) -> None:
        self.price = price
        self.key = key
        self.quantity = 0
        self.head: OrderNode | None = None
        self.tail: OrderNode | None = None


class OrderNode:
    """A resting order, linked into its level; `leaves` is what is left to trade."""

    __slots__ = (
        "order_id",
        "account",
        "is_buy",
        "price",
        "leaves",
        "seq",
        "tif",
        "level",
        "prev",
        "next",
    )

    def __init__(
        self,
        order_id: Hashable,
        account: Hashable,
        is_buy: bool,
        price: int,
        leaves: int,
        seq: int,
        tif: TimeInForce,
        level: LevelNode,
        prev: OrderNode | None,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.is_buy = is_buy
        self.price = price
        self.leaves = leaves
        self.seq = seq
        self.tif = tif
        self.level = level
        self.prev = prev
        self.next: OrderNode | None = None

    def view(self) -> RestingOrder:
        side = Side.BUY if self.is_buy else Side.SELL
        return RestingOrder(
            self.order_id, self.account, side, self.price, self.leaves, self.seq, self.tif
        )
