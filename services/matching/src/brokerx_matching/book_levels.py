"""What rests in an order book: price levels, their FIFO queues and the order index.

`BookLevels` is the base of `OrderBook` (book.py): it holds the resting orders and does
everything that needs no matching: putting an order back at its persisted priority
(recovery), taking one out (cancel) and reading the book (touch, depth, snapshots).
Matching an incoming order is book.py's; it works on the attributes defined here
directly, without calls into this module, because it is the hot path.

Layout (chosen for speed, see `bench/book_bench.py`):

* one `LevelNode` per price, holding an intrusive doubly linked FIFO of `OrderNode`s,
  so that cancel is O(1) given the order id;
* per side, a dict key -> `LevelNode` plus a plain sorted list of keys with the best price
  at the end (`list.pop()` when the touch empties). Keys are the price for bids and
  minus the price for asks, so "better" is always "greater" and one matching loop
  serves both sides. With a few hundred levels `bisect.insort` on a list beats a tree
  (the bench ran ~20 % slower with `SortedList`), and it stays a memmove of pointers
  even at tens of thousands of levels.

Removed orders are unlinked so that they are freed by refcount: no cycle is left for
the garbage collector, whose pauses would otherwise set the tail latency.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterator

from brokerx_matching.book_types import (
    CancelResult,
    Depth,
    DuplicateOrderId,
    LevelNode,
    OrderBookError,
    OrderNode,
    RestingOrder,
    Side,
    TimeInForce,
    WouldCross,
)

_BUY = Side.BUY
_SELL = Side.SELL
# `tuple.__new__(NamedTupleClass, values)` skips the generated Python-level `__new__`.
_new = tuple.__new__


class BookLevels:
    """The resting orders of one symbol's book, by side, price and time priority.

    `next_seq` is the priority sequence number the next resting order will get; the
    engine seeds it at start-up and persists it with each batch.
    """

    __slots__ = ("next_seq", "_orders", "_bid_levels", "_bid_keys", "_ask_levels", "_ask_keys")

    def __init__(self, next_seq: int = 1) -> None:
        self.next_seq = next_seq
        self._orders: dict[Hashable, OrderNode] = {}
        self._bid_levels: dict[int, LevelNode] = {}
        self._bid_keys: list[int] = []  # prices, ascending: best bid last
        self._ask_levels: dict[int, LevelNode] = {}
        self._ask_keys: list[int] = []  # minus prices, ascending: best ask last

    # ------------------------------------------------------------------ orders

    def cancel(self, order_id: Hashable) -> CancelResult:
        """Remove a resting order; `was_resting` is False when the id is not in the book."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return _new(CancelResult, (order_id, False, 0))
        level = order.level
        prev = order.prev
        nxt = order.next
        if prev is None:
            level.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            level.tail = prev
        else:
            nxt.prev = prev
        if level.head is None:
            self._drop_level(level, order.is_buy)
        else:
            level.quantity -= order.leaves
        return _new(CancelResult, (order_id, True, order.leaves))

    def add_resting(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        leaves_quantity: int,
        price_ticks: int,
        priority_seq: int,
        time_in_force: TimeInForce = TimeInForce.DAY,
    ) -> None:
        """Put an order back at its persisted priority, without matching (recovery).

        Within a level the order goes behind every order with a smaller `priority_seq`,
        so any load order is correct (loading in seq order is O(1) per order).
        `next_seq` is raised past `priority_seq` if needed.
        """
        if leaves_quantity <= 0:
            raise OrderBookError(f"quantity must be positive, got {leaves_quantity}")
        if order_id in self._orders:
            raise DuplicateOrderId(order_id)
        is_buy = side == _BUY
        if is_buy:
            levels, keys, key = self._bid_levels, self._bid_keys, price_ticks
            opposite = self._ask_keys
        else:
            levels, keys, key = self._ask_levels, self._ask_keys, -price_ticks
            opposite = self._bid_keys
        if opposite and -opposite[-1] <= key:
            raise WouldCross(order_id)
        level = levels.get(key)
        if level is None:
            level = levels[key] = LevelNode(price_ticks, key)
            insort(keys, key)
        # Behind the last order with a smaller seq: O(1) when loaded in seq order.
        after = level.tail
        while after is not None and after.seq > priority_seq:
            after = after.prev
        order = OrderNode(
            order_id,
            account,
            is_buy,
            price_ticks,
            leaves_quantity,
            priority_seq,
            time_in_force,
            level,
            after,
        )
        if after is None:
            order.next = level.head
            level.head = order
        else:
            order.next = after.next
            after.next = order
        if order.next is None:
            level.tail = order
        else:
            order.next.prev = order
        level.quantity += leaves_quantity
        self._orders[order_id] = order
        if priority_seq >= self.next_seq:
            self.next_seq = priority_seq + 1

    # ----------------------------------------------------------------- queries

    def best_bid(self) -> tuple[int, int] | None:
        """(price_ticks, total quantity) of the best bid, or None."""
        if not self._bid_keys:
            return None
        level = self._bid_levels[self._bid_keys[-1]]
        return level.price, level.quantity

    def best_ask(self) -> tuple[int, int] | None:
        """(price_ticks, total quantity) of the best ask, or None."""
        if not self._ask_keys:
            return None
        level = self._ask_levels[self._ask_keys[-1]]
        return level.price, level.quantity

    def depth(self, levels: int) -> Depth:
        """Up to `levels` aggregated levels per side, best first."""
        if levels <= 0:
            return Depth([], [])
        bids = self._bid_levels
        asks = self._ask_levels
        return Depth(
            [(bids[k].price, bids[k].quantity) for k in self._bid_keys[: -levels - 1 : -1]],
            [(asks[k].price, asks[k].quantity) for k in self._ask_keys[: -levels - 1 : -1]],
        )

    def contains(self, order_id: Hashable) -> bool:
        """Whether the order is resting in this book."""
        return order_id in self._orders

    __contains__ = contains

    def get(self, order_id: Hashable) -> RestingOrder | None:
        """The resting order with this id (leaves, price, priority), or None."""
        order = self._orders.get(order_id)
        return None if order is None else order.view()

    def __len__(self) -> int:
        """Number of resting orders."""
        return len(self._orders)

    def resting_orders(self, side: Side | None = None) -> Iterator[RestingOrder]:
        """Resting orders in priority order: bids best first, then asks best first.

        Do not change the book while iterating.
        """
        sides: list[tuple[dict[int, LevelNode], list[int]]] = []
        if side is None or side == _BUY:
            sides.append((self._bid_levels, self._bid_keys))
        if side is None or side == _SELL:
            sides.append((self._ask_levels, self._ask_keys))
        for levels, keys in sides:
            for key in reversed(keys):
                order = levels[key].head
                while order is not None:
                    yield order.view()
                    order = order.next

    def __iter__(self) -> Iterator[RestingOrder]:
        return self.resting_orders()

    # ---------------------------------------------------------------- internals

    def _drop_level(self, level: LevelNode, is_buy: bool) -> None:
        """Forget a level that has just become empty."""
        key = level.key
        if is_buy:
            levels, keys = self._bid_levels, self._bid_keys
        else:
            levels, keys = self._ask_levels, self._ask_keys
        del levels[key]
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]
