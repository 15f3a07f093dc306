"""The order book of one symbol: a pure, synchronous data structure.

No I/O, no clock, no `Decimal`: prices are integer ticks and quantities integer shares.
The engine owns persistence, money and time; it converts at its edges and applies the
results returned here.

Layout (chosen for speed, see `bench/book_bench.py`):

* one `_Level` per price, holding an intrusive doubly linked FIFO of `_Order` nodes,
  so that cancel is O(1) given the order id;
* per side, a dict key -> `_Level` plus a plain sorted list of keys with the best price
  at the end (`list.pop()` when the touch empties). Keys are the price for bids and
  minus the price for asks, so "better" is always "greater" and one matching loop
  serves both sides. A few hundred levels make `bisect.insort` on a list cheaper than
  any tree; it stays a memmove of pointers even at tens of thousands of levels.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterator, Sequence

from brokerx_matching.book_types import (
    CancelReason,
    CancelResult,
    Depth,
    DuplicateOrderId,
    Fill,
    MatchResult,
    OrderBookError,
    OrderState,
    RestingOrder,
    Side,
    TimeInForce,
    WouldCross,
)

__all__ = [
    "CancelReason",
    "CancelResult",
    "Depth",
    "DuplicateOrderId",
    "Fill",
    "MatchResult",
    "OrderBook",
    "OrderBookError",
    "OrderState",
    "RestingOrder",
    "Side",
    "TimeInForce",
    "WouldCross",
]

# Module constants: cheaper to load than enum attributes in the hot path.
_BUY = Side.BUY
_SELL = Side.SELL
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_RESTING_TIFS = (TimeInForce.DAY, TimeInForce.GTC)
_RESTED = OrderState.RESTED
_FILLED = OrderState.FILLED
_CANCELED = OrderState.CANCELED
_UNKNOWN = OrderState.UNKNOWN
_R_COLLAR = CancelReason.COLLAR
_R_NO_LIQUIDITY = CancelReason.NO_LIQUIDITY
_R_IOC = CancelReason.IOC
_R_FOK = CancelReason.FOK
_R_SELF_TRADE = CancelReason.SELF_TRADE
_NO_FILLS: tuple[Fill, ...] = ()


class _Level:
    __slots__ = ("price", "key", "quantity", "head", "tail")

    def __init__(self, price: int, key: int, quantity: int, order: _Order) -> None:
        self.price = price
        self.key = key
        self.quantity = quantity
        self.head: _Order | None = order
        self.tail: _Order | None = order


class _Order:
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
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.is_buy = is_buy
        self.price = price
        self.leaves = leaves
        self.seq = seq
        self.tif = tif
        self.level: _Level
        self.prev: _Order | None = None
        self.next: _Order | None = None

    def view(self) -> RestingOrder:
        side = _BUY if self.is_buy else _SELL
        return RestingOrder(
            self.order_id, self.account, side, self.price, self.leaves, self.seq, self.tif
        )


class OrderBook:
    """Price-time priority book of one symbol with self-trade prevention.

    `next_seq` is the priority sequence number the next resting order will get; the
    engine seeds it at start-up and persists it with each batch.
    """

    __slots__ = ("next_seq", "_orders", "_bid_levels", "_bid_keys", "_ask_levels", "_ask_keys")

    def __init__(self, next_seq: int = 1) -> None:
        self.next_seq = next_seq
        self._orders: dict[Hashable, _Order] = {}
        self._bid_levels: dict[int, _Level] = {}
        self._bid_keys: list[int] = []  # prices, ascending: best bid last
        self._ask_levels: dict[int, _Level] = {}
        self._ask_keys: list[int] = []  # minus prices, ascending: best ask last

    # ------------------------------------------------------------------ orders

    def submit_limit(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        quantity: int,
        price_ticks: int,
        time_in_force: TimeInForce = TimeInForce.DAY,
    ) -> MatchResult:
        """Match a limit order, then rest (day, gtc) or cancel (ioc, fok) what is left.

        A fok order trades only if its whole quantity can trade now against liquidity
        that crosses its limit and sits ahead of any order of the same account;
        otherwise it is canceled with reason `fok` and nothing trades.
        """
        if quantity <= 0:
            raise OrderBookError(f"quantity must be positive, got {quantity}")
        if order_id in self._orders:
            raise DuplicateOrderId(order_id)
        return self._execute(order_id, account, side == _BUY, quantity, price_ticks, time_in_force)

    def submit_market(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        quantity: int,
        collar_ticks: int,
    ) -> MatchResult:
        """Trade a market order at prices up to (buy) / down to (sell) `collar_ticks`.

        It never rests: the remainder is canceled with reason `collar` when the next
        opposite price is beyond the collar, `no_liquidity` when the opposite side is
        empty, `self_trade` when the next resting order is the same account's.
        """
        if quantity <= 0:
            raise OrderBookError(f"quantity must be positive, got {quantity}")
        if order_id in self._orders:
            raise DuplicateOrderId(order_id)
        return self._execute(order_id, account, side == _BUY, quantity, collar_ticks, None)

    def cancel(self, order_id: Hashable) -> CancelResult:
        """Remove a resting order; `was_resting` is False when the id is not in the book."""
        order = self._orders.pop(order_id, None)
        if order is None:
            return CancelResult(order_id, False, 0)
        self._unlink(order)
        return CancelResult(order_id, True, order.leaves)

    def replace(
        self,
        order_id: Hashable,
        new_leaves_quantity: int,
        new_price_ticks: int,
        time_in_force: TimeInForce | None = None,
    ) -> MatchResult:
        """Change a resting order's remaining quantity and/or limit price.

        The book only knows what is left of an order, so the caller passes the new
        LEAVES quantity: `new_total_quantity - filled_quantity`, which must be > 0
        (a new total at or below what already filled is the engine's to reject).

        Same price and leaves not increased: amended in place, time priority kept.
        Otherwise the order loses priority: it is taken out and re-entered as a limit
        order (it trades as the aggressor if the new price crosses, STP applies) and
        what is left rests at the back of its level with a new `priority_seq`.
        `time_in_force`, if given, must be day or gtc; it does not affect priority.
        An order that is not resting gives state `unknown` and changes nothing.
        """
        if new_leaves_quantity <= 0:
            raise OrderBookError(f"new leaves quantity must be positive, got {new_leaves_quantity}")
        if time_in_force is not None and time_in_force not in _RESTING_TIFS:
            raise OrderBookError(f"a resting order cannot become {time_in_force}")
        order = self._orders.get(order_id)
        if order is None:
            return MatchResult(order_id, _UNKNOWN, _NO_FILLS, 0, 0, 0, None, None)
        if time_in_force is not None:
            order.tif = time_in_force
        leaves = order.leaves
        if new_price_ticks == order.price and new_leaves_quantity <= leaves:
            order.leaves = new_leaves_quantity
            order.level.quantity -= leaves - new_leaves_quantity
            return MatchResult(
                order_id, _RESTED, _NO_FILLS, 0, new_leaves_quantity, 0, None, order.seq
            )
        del self._orders[order_id]
        self._unlink(order)
        return self._execute(
            order_id, order.account, order.is_buy, new_leaves_quantity, new_price_ticks, order.tif
        )

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
            best_ask = self._ask_keys[-1] if self._ask_keys else None
            if best_ask is not None and price_ticks >= -best_ask:
                raise WouldCross(order_id)
        elif self._bid_keys and price_ticks <= self._bid_keys[-1]:
            raise WouldCross(order_id)
        order = _Order(
            order_id, account, is_buy, price_ticks, leaves_quantity, priority_seq, time_in_force
        )
        self._orders[order_id] = order
        levels, keys = (
            (self._bid_levels, self._bid_keys) if is_buy else (self._ask_levels, self._ask_keys)
        )
        key = price_ticks if is_buy else -price_ticks
        level = levels.get(key)
        if level is None:
            order.level = levels[key] = _Level(price_ticks, key, leaves_quantity, order)
            insort(keys, key)
        else:
            order.level = level
            level.quantity += leaves_quantity
            after = level.tail
            while after is not None and after.seq > priority_seq:
                after = after.prev
            order.prev = after
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
        bids = self._bid_levels
        asks = self._ask_levels
        return Depth(
            [(bids[k].price, bids[k].quantity) for k in self._bid_keys[: -levels - 1 : -1]],
            [(asks[k].price, asks[k].quantity) for k in self._ask_keys[: -levels - 1 : -1]],
        )

    def contains(self, order_id: Hashable) -> bool:
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
        sides: list[tuple[dict[int, _Level], list[int]]] = []
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

    def _unlink(self, order: _Order) -> None:
        """Take a resting order out of its level (already removed from `_orders`)."""
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
            key = level.key
            if order.is_buy:
                levels, keys = self._bid_levels, self._bid_keys
            else:
                levels, keys = self._ask_levels, self._ask_keys
            del levels[key]
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        else:
            level.quantity -= order.leaves

    def _execute(
        self,
        order_id: Hashable,
        account: Hashable,
        is_buy: bool,
        quantity: int,
        limit: int,
        tif: TimeInForce | None,
    ) -> MatchResult:
        """Match an incoming order; `tif` None means market with `limit` as the collar."""
        if is_buy:
            opp_levels, opp_keys, threshold = self._ask_levels, self._ask_keys, -limit
        else:
            opp_levels, opp_keys, threshold = self._bid_levels, self._bid_keys, limit
        # Crossing means: opposite key >= threshold.
        if tif == _FOK and not self._fok_fillable(
            account, quantity, opp_levels, opp_keys, threshold
        ):
            return MatchResult(order_id, _CANCELED, _NO_FILLS, 0, 0, quantity, _R_FOK, None)

        orders = self._orders
        fills: list[Fill] | None = None
        remaining = quantity
        reason: CancelReason | None = None
        while opp_keys:
            key = opp_keys[-1]
            if key < threshold:
                break
            level = opp_levels[key]
            price = level.price
            order = level.head
            traded = 0
            while order is not None:
                if order.account == account:
                    reason = _R_SELF_TRADE
                    break
                leaves = order.leaves
                if fills is None:
                    fills = []
                if leaves <= remaining:
                    fills.append(Fill(order.order_id, order.account, order_id, price, leaves, 0))
                    del orders[order.order_id]
                    traded += leaves
                    remaining -= leaves
                    order = order.next
                    if not remaining:
                        break
                else:
                    order.leaves = leaves - remaining
                    fills.append(
                        Fill(
                            order.order_id,
                            order.account,
                            order_id,
                            price,
                            remaining,
                            leaves - remaining,
                        )
                    )
                    traded += remaining
                    remaining = 0
                    break
            if order is None:
                del opp_levels[key]
                opp_keys.pop()
            else:
                level.head = order
                order.prev = None
                level.quantity -= traded
            if not remaining or reason is not None:
                break

        filled = quantity - remaining
        done: Sequence[Fill] = _NO_FILLS if fills is None else fills
        if not remaining:
            return MatchResult(order_id, _FILLED, done, filled, 0, 0, None, None)
        if reason is None:
            if tif is None:
                reason = _R_COLLAR if opp_keys else _R_NO_LIQUIDITY
            elif tif == _IOC or tif == _FOK:
                reason = _R_IOC if tif == _IOC else _R_FOK
        if reason is not None:
            return MatchResult(order_id, _CANCELED, done, filled, 0, remaining, reason, None)

        # Rest the remainder at the back of its level (a day or gtc limit order).
        assert tif is not None
        seq = self.next_seq
        self.next_seq = seq + 1
        new = _Order(order_id, account, is_buy, limit, remaining, seq, tif)
        orders[order_id] = new
        if is_buy:
            levels, keys, key = self._bid_levels, self._bid_keys, limit
        else:
            levels, keys, key = self._ask_levels, self._ask_keys, -limit
        own = levels.get(key)
        if own is None:
            new.level = levels[key] = _Level(limit, key, remaining, new)
            insort(keys, key)
        else:
            new.level = own
            tail = own.tail
            new.prev = tail
            tail.next = new  # type: ignore[union-attr]  # a live level is never empty
            own.tail = new
            own.quantity += remaining
        return MatchResult(order_id, _RESTED, done, filled, remaining, 0, None, seq)

    @staticmethod
    def _fok_fillable(
        account: Hashable,
        quantity: int,
        opp_levels: dict[int, _Level],
        opp_keys: list[int],
        threshold: int,
    ) -> bool:
        """Can `quantity` trade now, before crossing liquidity runs out or STP stops it?"""
        needed = quantity
        for key in reversed(opp_keys):
            if key < threshold:
                return False
            order = opp_levels[key].head
            while order is not None:
                if order.account == account:
                    return False
                needed -= order.leaves
                if needed <= 0:
                    return True
                order = order.next
        return False
