"""The order book of one symbol: a pure, synchronous data structure.

No I/O, no clock, no `Decimal`: prices are integer ticks and quantities integer shares.
The engine owns persistence, money and time; it converts at its edges and applies the
results returned here.

This module matches incoming orders: `OrderBook` adds to `BookLevels` (book_levels.py,
the resting orders, cancel, recovery and queries) the operations that trade, namely
limit orders with their time in force (day/gtc rest, ioc/fok cancel what is left, fok
checked up front), market orders within their collar (as ioc, or fok), and replaces
that lose priority, all under price-time priority with self-trade prevention. The
value types are in book_types.py and re-exported here: this is the module the engine
imports.

`submit_limit` is the hot path: one flat loop over the opposite side's levels that
reads and relinks the structure of book_levels.py in place, with no helper calls.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Hashable, Sequence

from brokerx_matching.book_levels import BookLevels
from brokerx_matching.book_types import (
    CancelReason,
    CancelResult,
    Depth,
    DuplicateOrderId,
    Fill,
    LevelNode,
    MatchResult,
    OrderBookError,
    OrderNode,
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
# `tuple.__new__(NamedTupleClass, values)` skips the generated Python-level `__new__`:
# half the cost, and results are built on every operation.
_new = tuple.__new__


class OrderBook(BookLevels):
    """Price-time priority book of one symbol with self-trade prevention.

    `next_seq` (see `BookLevels`) is the priority sequence number the next resting
    order will get; the engine seeds it at start-up and persists it with each batch.
    """

    __slots__ = ()

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
        # The hot path: one flat function, locals only, no helper calls but the FOK check.
        if quantity <= 0:
            raise OrderBookError(f"quantity must be positive, got {quantity}")
        orders = self._orders
        if order_id in orders:
            raise DuplicateOrderId(order_id)
        is_buy = side == _BUY
        # Opposite keys are ascending with the best last; the order crosses a key >= threshold.
        if is_buy:
            opp_levels, opp_keys, threshold = self._ask_levels, self._ask_keys, -price_ticks
        else:
            opp_levels, opp_keys, threshold = self._bid_levels, self._bid_keys, price_ticks
        if time_in_force == _FOK and not _fok_fillable(
            account, quantity, opp_levels, opp_keys, threshold
        ):
            return _new(MatchResult, (order_id, _CANCELED, _NO_FILLS, 0, 0, quantity, _R_FOK, None))

        fills: list[Fill] | None = None
        remaining = quantity
        self_trade = False
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
                    self_trade = True
                    break
                leaves = order.leaves
                if fills is None:
                    fills = []
                if leaves <= remaining:
                    fills.append(
                        _new(Fill, (order.order_id, order.account, order_id, price, leaves, 0))
                    )
                    del orders[order.order_id]
                    traded += leaves
                    remaining -= leaves
                    order = order.next
                    if order is not None:
                        # Cut the back link to the filled order, so that consumed orders
                        # form no cycle and are freed by refcount, not by the collector.
                        order.prev = None
                    if not remaining:
                        break
                else:
                    leaves -= remaining
                    order.leaves = leaves
                    fills.append(
                        _new(
                            Fill,
                            (order.order_id, order.account, order_id, price, remaining, leaves),
                        )
                    )
                    traded += remaining
                    remaining = 0
                    break
            if order is None:
                del opp_levels[key]
                opp_keys.pop()
                level.head = level.tail = None  # no level <-> order cycle left behind
            else:
                level.head = order
                level.quantity -= traded
            if not remaining or self_trade:
                break

        done: Sequence[Fill] = _NO_FILLS if fills is None else fills
        if not remaining:
            return _new(MatchResult, (order_id, _FILLED, done, quantity, 0, 0, None, None))
        if self_trade or time_in_force == _IOC or time_in_force == _FOK:
            # (a fok that passed its check always fills: kept for safety)
            reason = _R_SELF_TRADE if self_trade else _R_IOC if time_in_force == _IOC else _R_FOK
            return _new(
                MatchResult,
                (order_id, _CANCELED, done, quantity - remaining, 0, remaining, reason, None),
            )

        # Rest the remainder at the back of its level.
        seq = self.next_seq
        self.next_seq = seq + 1
        if is_buy:
            levels, keys, key = self._bid_levels, self._bid_keys, price_ticks
        else:
            levels, keys, key = self._ask_levels, self._ask_keys, -price_ticks
        own = levels.get(key)
        if own is None:
            own = levels[key] = LevelNode(price_ticks, key)
            insort(keys, key)
            new = OrderNode(
                order_id, account, is_buy, price_ticks, remaining, seq, time_in_force, own, None
            )
            own.head = new
        else:
            tail = own.tail
            new = OrderNode(
                order_id, account, is_buy, price_ticks, remaining, seq, time_in_force, own, tail
            )
            tail.next = new  # type: ignore[union-attr]  # a live level is never empty
        own.tail = new
        own.quantity += remaining
        orders[order_id] = new
        return _new(
            MatchResult, (order_id, _RESTED, done, quantity - remaining, remaining, 0, None, seq)
        )

    def submit_market(
        self,
        order_id: Hashable,
        account: Hashable,
        side: Side,
        quantity: int,
        collar_ticks: int,
        time_in_force: TimeInForce = TimeInForce.IOC,
    ) -> MatchResult:
        """Trade a market order at prices up to (buy) / down to (sell) `collar_ticks`.

        It never rests: the remainder is canceled with reason `collar` when the next
        opposite price is beyond the collar, `no_liquidity` when the opposite side is
        empty, `self_trade` when the next resting order is the same account's. A fok
        market order fills entirely within the collar or is canceled with reason `fok`
        and nothing trades; any other time in force trades as ioc.
        """
        # A market order matches exactly like an ioc (fok) limit order at its collar;
        # only the reason for canceling an ioc remainder differs.
        tif = _FOK if time_in_force == _FOK else _IOC
        result = self.submit_limit(order_id, account, side, quantity, collar_ticks, tif)
        if result[6] is not _R_IOC:
            return result
        opposite = self._ask_keys if side == _BUY else self._bid_keys
        return _new(MatchResult, (*result[:6], _R_COLLAR if opposite else _R_NO_LIQUIDITY, None))

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
            return _new(MatchResult, (order_id, _UNKNOWN, _NO_FILLS, 0, 0, 0, None, None))
        if time_in_force is not None:
            order.tif = time_in_force
        leaves = order.leaves
        if new_price_ticks == order.price and new_leaves_quantity <= leaves:
            order.leaves = new_leaves_quantity
            order.level.quantity -= leaves - new_leaves_quantity
            return _new(
                MatchResult,
                (order_id, _RESTED, _NO_FILLS, 0, new_leaves_quantity, 0, None, order.seq),
            )
        self.cancel(order_id)
        side = _BUY if order.is_buy else _SELL
        return self.submit_limit(
            order_id, order.account, side, new_leaves_quantity, new_price_ticks, order.tif
        )


def _fok_fillable(
    account: Hashable,
    quantity: int,
    opp_levels: dict[int, LevelNode],
    opp_keys: list[int],
    threshold: int,
) -> bool:
    """Can `quantity` trade now, before crossing liquidity runs out or STP stops it?

    Walks the opposite side exactly as matching would, so a fok that passes always
    fills entirely.
    """
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
