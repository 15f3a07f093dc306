"""The order book against a naive reference matcher, on random command sequences.

The reference keeps resting orders in a plain list and finds the next match by sorting
that list on every step: slow and obviously right. Few accounts make self-trade
prevention frequent; few price levels make crosses frequent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from brokerx_matching.book import MatchResult, OrderBook, RestingOrder, Side, TimeInForce

BUY, SELL = Side.BUY, Side.SELL
ACCOUNTS = st.sampled_from(["A", "B", "C"])
SIDES = st.sampled_from([BUY, SELL])
PRICES = st.integers(min_value=95, max_value=104)
QUANTITIES = st.integers(min_value=1, max_value=12)
LIMIT_TIFS = st.sampled_from(list(TimeInForce))
RESTING_TIFS = st.sampled_from([TimeInForce.DAY, TimeInForce.GTC])

# (resting id, resting account, incoming id, price, qty, resting leaves after)
FillRow = tuple[object, object, object, int, int, int]
# (state, fills, filled, leaves, canceled, reason, seq)
Outcome = tuple[str, list[FillRow], int, int, int, str | None, int | None]


@dataclass
class RefOrder:
    order_id: int
    account: str
    side: Side
    price: int
    leaves: int
    seq: int
    tif: TimeInForce


class ReferenceBook:
    """Price-time matching with STP, done the slow and obvious way."""

    def __init__(self) -> None:
        self.orders: list[RefOrder] = []
        self.next_seq = 1

    def in_priority(self, side: Side) -> list[RefOrder]:
        same = [o for o in self.orders if o.side == side]
        if side == BUY:
            return sorted(same, key=lambda o: (-o.price, o.seq))
        return sorted(same, key=lambda o: (o.price, o.seq))

    def find(self, order_id: int) -> RefOrder | None:
        return next((o for o in self.orders if o.order_id == order_id), None)

    def submit(
        self,
        order_id: int,
        account: str,
        side: Side,
        qty: int,
        limit: int,
        tif: TimeInForce,
        *,
        market: bool = False,  # `limit` is the collar; ioc unless fok
    ) -> Outcome:
        opposite = SELL if side == BUY else BUY
        crossing = [
            o
            for o in self.in_priority(opposite)
            if (o.price <= limit if side == BUY else o.price >= limit)
        ]
        if tif == TimeInForce.FOK:
            available = 0
            for o in crossing:
                if o.account == account:
                    break
                available += o.leaves
            if available < qty:
                return ("canceled", [], 0, 0, qty, "fok", None)
        fills: list[FillRow] = []
        remaining = qty
        self_trade = False
        for o in crossing:
            if remaining == 0:
                break
            if o.account == account:
                self_trade = True
                break
            traded = min(o.leaves, remaining)
            o.leaves -= traded
            remaining -= traded
            fills.append((o.order_id, o.account, order_id, o.price, traded, o.leaves))
            if o.leaves == 0:
                self.orders.remove(o)
        filled = qty - remaining
        if remaining == 0:
            return ("filled", fills, filled, 0, 0, None, None)
        if self_trade:
            reason = "self_trade"
        elif market and tif != TimeInForce.FOK:
            reason = "no_liquidity" if not self.in_priority(opposite) else "collar"
        elif market or tif in (TimeInForce.IOC, TimeInForce.FOK):
            reason = tif.value
        else:
            seq = self.next_seq
            self.next_seq += 1
            self.orders.append(RefOrder(order_id, account, side, limit, remaining, seq, tif))
            return ("rested", fills, filled, remaining, 0, None, seq)
        return ("canceled", fills, filled, 0, remaining, reason, None)

    def cancel(self, order_id: int) -> tuple[bool, int]:
        order = self.find(order_id)
        if order is None:
            return False, 0
        self.orders.remove(order)
        return True, order.leaves

    def replace(self, order_id: int, leaves: int, price: int) -> Outcome:
        order = self.find(order_id)
        if order is None:
            return ("unknown", [], 0, 0, 0, None, None)
        if price == order.price and leaves <= order.leaves:
            order.leaves = leaves
            return ("rested", [], 0, leaves, 0, None, order.seq)
        self.orders.remove(order)
        return self.submit(order_id, order.account, order.side, leaves, price, order.tif)

    def add_resting(self, order: RefOrder) -> None:
        self.orders.append(order)
        self.next_seq = max(self.next_seq, order.seq + 1)

    def snapshot(self) -> list[RestingOrder]:
        return [
            RestingOrder(o.order_id, o.account, o.side, o.price, o.leaves, o.seq, o.tif)
            for side in (BUY, SELL)
            for o in self.in_priority(side)
        ]


def outcome(result: MatchResult) -> Outcome:
    """The book's MatchResult in the reference's shape."""
    return (
        result.state.value,
        [
            (
                f.resting_order_id,
                f.resting_account,
                f.incoming_order_id,
                f.price_ticks,
                f.quantity,
                f.resting_leaves_quantity,
            )
            for f in result.fills
        ],
        result.filled_quantity,
        result.leaves_quantity,
        result.canceled_quantity,
        None if result.cancel_reason is None else result.cancel_reason.value,
        result.priority_seq,
    )


@dataclass
class Ledger:
    """What the test knows about one order, to check that no share appears or vanishes."""

    quantity: int
    filled: int = 0
    canceled: int = 0


class BookMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook()
        self.ref = ReferenceBook()
        self.ledger: dict[object, Ledger] = {}
        self.next_id = 0

    # ------------------------------------------------------------- helpers

    def new_id(self, quantity: int) -> int:
        self.next_id += 1
        self.ledger[self.next_id] = Ledger(quantity)
        return self.next_id

    def record(self, order_id: int, got: Outcome) -> None:
        state, fills, filled, _, canceled, reason, _ = got
        event(f"{state} {reason or ''} {'with' if fills else 'no'} fills")
        entry = self.ledger[order_id]
        entry.filled += filled
        entry.canceled += canceled
        assert sum(f[4] for f in fills) == filled
        for resting_id, _, _, _, qty, _ in fills:
            self.ledger[resting_id].filled += qty

    def target_id(self, data: st.DataObject) -> int:
        """Usually a resting order; otherwise any id seen (finished orders) or a stranger."""
        resting = [o.order_id for o in self.book.resting_orders()]
        if resting and data.draw(st.integers(0, 4)) > 0:
            chosen: int = data.draw(st.sampled_from(resting))
            return chosen
        return data.draw(st.integers(min_value=1, max_value=self.next_id + 2))

    # --------------------------------------------------------------- rules

    @rule(account=ACCOUNTS, side=SIDES, qty=QUANTITIES, price=PRICES, tif=LIMIT_TIFS)
    def limit(self, account: str, side: Side, qty: int, price: int, tif: TimeInForce) -> None:
        order_id = self.new_id(qty)
        got = outcome(self.book.submit_limit(order_id, account, side, qty, price, tif))
        assert got == self.ref.submit(order_id, account, side, qty, price, tif)
        self.record(order_id, got)

    @rule(account=ACCOUNTS, side=SIDES, qty=st.integers(1, 30), collar=PRICES, tif=LIMIT_TIFS)
    def market(self, account: str, side: Side, qty: int, collar: int, tif: TimeInForce) -> None:
        order_id = self.new_id(qty)
        got = outcome(self.book.submit_market(order_id, account, side, qty, collar, tif))
        assert got == self.ref.submit(order_id, account, side, qty, collar, tif, market=True)
        assert got[0] != "rested"
        if tif == TimeInForce.FOK:
            assert got[0] == "filled" or got[1] == []
        self.record(order_id, got)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        order_id = self.target_id(data)
        result = self.book.cancel(order_id)
        assert (result.was_resting, result.leaves_quantity) == self.ref.cancel(order_id)
        if result.was_resting:
            self.ledger[order_id].canceled += result.leaves_quantity

    @rule(data=st.data(), leaves_change=st.integers(-2, 2), price_change=st.integers(-2, 2))
    def replace(self, data: st.DataObject, leaves_change: int, price_change: int) -> None:
        """Mostly small changes around the current terms, so "same price, one share less
        or more" (the priority boundary) is common."""
        order_id = self.target_id(data)
        before = self.book.get(order_id)
        if before is None:
            leaves, price = data.draw(QUANTITIES), data.draw(PRICES)
        else:
            leaves = max(1, before.leaves_quantity + leaves_change)
            price = before.price_ticks + price_change
        got = outcome(self.book.replace(order_id, leaves, price))
        assert got == self.ref.replace(order_id, leaves, price)
        if before is None:
            assert got[0] == "unknown"
            return
        # The order's total becomes what it had filled plus its new leaves.
        entry = self.ledger[order_id]
        entry.quantity = entry.filled + leaves
        self.record(order_id, got)
        keeps_priority = price == before.price_ticks and leaves <= before.leaves_quantity
        if keeps_priority:
            assert got[0] == "rested"
            assert got[6] == before.priority_seq
        elif got[0] == "rested":
            assert got[6] is not None
            assert got[6] > before.priority_seq

    @rule(account=ACCOUNTS, side=SIDES, qty=QUANTITIES, price=PRICES, gap=st.integers(0, 3))
    def add_resting(self, account: str, side: Side, qty: int, price: int, gap: int) -> None:
        best = self.book.best_ask() if side == BUY else self.book.best_bid()
        if best is not None and (price >= best[0] if side == BUY else price <= best[0]):
            return  # a recovered book never crosses
        order_id = self.new_id(qty)
        seq = self.book.next_seq + gap
        self.book.add_resting(order_id, account, side, qty, price, seq, TimeInForce.GTC)
        self.ref.add_resting(RefOrder(order_id, account, side, price, qty, seq, TimeInForce.GTC))

    @rule(seed=st.integers(0, 2**32 - 1))
    def recover(self, seed: int) -> None:
        """Rebuild the book from its snapshot, loaded in a random order."""
        orders = list(self.book.resting_orders())
        random.Random(seed).shuffle(orders)
        rebuilt = OrderBook(next_seq=self.book.next_seq)
        for o in orders:
            rebuilt.add_resting(
                o.order_id,
                o.account,
                o.side,
                o.leaves_quantity,
                o.price_ticks,
                o.priority_seq,
                o.time_in_force,
            )
        assert rebuilt.next_seq == self.book.next_seq
        self.book = rebuilt

    # ----------------------------------------------------------- invariants

    @invariant()
    def never_crossed(self) -> None:
        bid, ask = self.book.best_bid(), self.book.best_ask()
        if bid is not None and ask is not None:
            assert bid[0] < ask[0]

    @invariant()
    def same_resting_orders_as_reference(self) -> None:
        snapshot = list(self.book.resting_orders())
        assert snapshot == self.ref.snapshot()
        assert self.book.next_seq == self.ref.next_seq
        assert len(self.book) == len(snapshot)
        for order in snapshot:
            assert self.book.contains(order.order_id)
            assert self.book.get(order.order_id) == order

    @invariant()
    def fifo_within_each_level(self) -> None:
        last: dict[tuple[Side, int], int] = {}
        for order in self.book.resting_orders():
            key = (order.side, order.price_ticks)
            assert last.get(key, 0) < order.priority_seq
            last[key] = order.priority_seq

    @invariant()
    def depth_adds_up(self) -> None:
        depth = self.book.depth(1_000)
        for side, levels in ((BUY, depth.bids), (SELL, depth.asks)):
            totals: dict[int, int] = {}
            for order in self.book.resting_orders(side):
                totals[order.price_ticks] = totals.get(order.price_ticks, 0) + order.leaves_quantity
            assert dict(levels) == totals
            assert [p for p, _ in levels] == sorted(totals, reverse=side == BUY)
        assert (depth.bids[0] if depth.bids else None) == self.book.best_bid()
        assert (depth.asks[0] if depth.asks else None) == self.book.best_ask()

    @invariant()
    def quantities_conserved(self) -> None:
        for order_id, entry in self.ledger.items():
            resting = self.book.get(order_id)
            leaves = 0 if resting is None else resting.leaves_quantity
            assert entry.filled + leaves + entry.canceled == entry.quantity
            assert 0 <= entry.filled <= entry.quantity


BookMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestOrderBookAgainstReference = BookMachine.TestCase
