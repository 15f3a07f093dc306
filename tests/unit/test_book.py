"""Example tests of the order book's matching rules (DESIGN.md, "Matching rules")."""

from __future__ import annotations

import gc
import uuid

import pytest

from brokerx_matching.book import (
    CancelReason,
    DuplicateOrderId,
    Fill,
    MatchResult,
    OrderBook,
    OrderBookError,
    OrderState,
    RestingOrder,
    Side,
    TimeInForce,
    WouldCross,
)
from tests.unit.book_helpers import BUY, DAY, GTC, IOC, SELL, fills_of, ids_at, rest

# ---------------------------------------------------------------- limit orders


def test_limit_order_rests_when_nothing_crosses() -> None:
    book = OrderBook()
    result = book.submit_limit("b1", "A", BUY, 10, 100)

    assert result == MatchResult("b1", OrderState.RESTED, (), 0, 10, 0, None, 1)
    assert book.best_bid() == (100, 10)
    assert book.best_ask() is None
    assert book.get("b1") == RestingOrder("b1", "A", BUY, 100, 10, 1, DAY)


def test_trade_happens_at_the_resting_price() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 10, 100)

    result = book.submit_limit("b1", "B", BUY, 10, 105)

    assert result.state is OrderState.FILLED
    assert result.fills == [Fill("s1", "A", "b1", 100, 10, 0)]
    assert result.fills[0].resting_filled
    assert result.filled_quantity == 10
    assert len(book) == 0


def test_fifo_within_a_level() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "B", SELL, 5, 100)
    rest(book, "s3", "C", SELL, 5, 100)

    result = book.submit_limit("b1", "D", BUY, 12, 100)

    assert fills_of(result) == [("s1", "b1", 100, 5), ("s2", "b1", 100, 5), ("s3", "b1", 100, 2)]
    assert book.get("s3") == RestingOrder("s3", "C", SELL, 100, 3, 3, DAY)
    assert book.best_ask() == (100, 3)


def test_better_price_before_earlier_time() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 101)
    rest(book, "s2", "B", SELL, 5, 100)

    result = book.submit_limit("b1", "C", BUY, 10, 101)

    assert fills_of(result) == [("s2", "b1", 100, 5), ("s1", "b1", 101, 5)]


def test_sell_aggressor_walks_bids_from_the_highest() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 5, 98)
    rest(book, "b2", "A", BUY, 5, 99)
    rest(book, "b3", "A", BUY, 5, 97)

    result = book.submit_limit("s1", "B", SELL, 12, 98)

    assert fills_of(result) == [("b2", "s1", 99, 5), ("b1", "s1", 98, 5)]
    assert result.state is OrderState.RESTED
    assert result.leaves_quantity == 2
    assert book.best_ask() == (98, 2)
    assert book.best_bid() == (97, 5)


def test_partial_fill_rests_the_limit_remainder() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 4, 100)

    result = book.submit_limit("b1", "B", BUY, 10, 100, GTC)

    assert result.state is OrderState.RESTED
    assert (result.filled_quantity, result.leaves_quantity) == (4, 6)
    assert result.priority_seq == 2
    assert book.get("b1") == RestingOrder("b1", "B", BUY, 100, 6, 2, GTC)
    assert book.best_bid() == (100, 6)
    assert book.best_ask() is None


def test_resting_order_partially_filled_keeps_its_place() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 10, 100)
    rest(book, "s2", "B", SELL, 10, 100)

    first = book.submit_limit("b1", "C", BUY, 4, 100)
    second = book.submit_limit("b2", "C", BUY, 8, 100)

    assert first.fills == [Fill("s1", "A", "b1", 100, 4, 6)]
    assert not first.fills[0].resting_filled
    assert fills_of(second) == [("s1", "b2", 100, 6), ("s2", "b2", 100, 2)]


def test_does_not_trade_beyond_the_limit() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "A", SELL, 5, 102)

    result = book.submit_limit("b1", "B", BUY, 10, 101)

    assert fills_of(result) == [("s1", "b1", 100, 5)]
    assert result.leaves_quantity == 5
    assert book.best_bid() == (101, 5)
    assert book.best_ask() == (102, 5)


def test_priority_seq_counter_is_seeded_and_exposed() -> None:
    book = OrderBook(next_seq=500)
    assert rest(book, "b1", "A", BUY, 1, 10) == 500
    book.submit_limit("x", "B", SELL, 1, 10)  # fills b1: takes no seq
    assert book.next_seq == 501
    assert rest(book, "b2", "A", BUY, 1, 10) == 501
    assert book.next_seq == 502


def test_rejects_bad_input() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 1, 10)
    with pytest.raises(DuplicateOrderId):
        book.submit_limit("b1", "A", BUY, 1, 9)
    with pytest.raises(DuplicateOrderId):
        book.submit_market("b1", "A", SELL, 1, 1)
    with pytest.raises(OrderBookError):
        book.submit_limit("b2", "A", BUY, 0, 9)
    with pytest.raises(OrderBookError):
        book.submit_market("b2", "A", BUY, -1, 9)
    assert book.get("b1") == RestingOrder("b1", "A", BUY, 10, 1, 1, DAY)


def test_uuid_ids_and_accounts() -> None:
    book = OrderBook()
    seller, buyer = uuid.uuid4(), uuid.uuid4()
    s1, b1 = uuid.uuid4(), uuid.uuid4()
    book.submit_limit(s1, seller, SELL, 3, 100)

    # Equal but distinct UUID objects must still be recognised (STP compares with ==).
    result = book.submit_limit(uuid.uuid4(), uuid.UUID(str(seller)), BUY, 3, 100)
    assert result.cancel_reason is CancelReason.SELF_TRADE

    result = book.submit_limit(b1, buyer, BUY, 3, 100)
    assert result.fills == [Fill(s1, seller, b1, 100, 3, 0)]


# ------------------------------------------------------ self-trade prevention


def test_self_trade_cancels_the_incoming_remainder() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "B", SELL, 5, 100)
    rest(book, "s3", "A", SELL, 5, 100)

    result = book.submit_limit("b1", "B", BUY, 12, 100)

    # Trades with s1, then meets its own s2: the rest of b1 is canceled, s2 and s3 stay.
    assert fills_of(result) == [("s1", "b1", 100, 5)]
    assert result.state is OrderState.CANCELED
    assert result.cancel_reason is CancelReason.SELF_TRADE
    assert (result.filled_quantity, result.canceled_quantity) == (5, 7)
    assert ids_at(book, SELL) == ["s2", "s3"]
    assert book.best_bid() is None


def test_self_trade_applies_to_market_and_ioc_orders() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)

    market = book.submit_market("m1", "A", BUY, 5, 200)
    ioc = book.submit_limit("i1", "A", BUY, 5, 100, IOC)

    assert market.cancel_reason is CancelReason.SELF_TRADE
    assert ioc.cancel_reason is CancelReason.SELF_TRADE
    assert market.fills == ()
    assert ioc.fills == ()
    assert book.best_ask() == (100, 5)


def test_own_order_beyond_the_limit_does_not_stop_the_order() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "B", SELL, 5, 101)

    result = book.submit_limit("b1", "B", BUY, 8, 100)

    assert fills_of(result) == [("s1", "b1", 100, 5)]
    assert result.state is OrderState.RESTED
    assert result.leaves_quantity == 3


def test_filled_exactly_before_reaching_the_own_order() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "B", SELL, 5, 100)

    result = book.submit_limit("b1", "B", BUY, 5, 100)

    assert result.state is OrderState.FILLED
    assert result.cancel_reason is None


# -------------------------------------------------------------------- cancel


def test_cancel_resting_order() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 10, 100)
    rest(book, "b2", "B", BUY, 5, 100)
    book.submit_limit("s1", "C", SELL, 3, 100)

    result = book.cancel("b1")

    assert (result.order_id, result.was_resting, result.leaves_quantity) == ("b1", True, 7)
    assert not book.contains("b1")
    assert book.best_bid() == (100, 5)
    assert ids_at(book, BUY) == ["b2"]


def test_cancel_unknown_or_finished_order() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    book.submit_limit("b1", "B", BUY, 5, 100)

    assert book.cancel("s1").was_resting is False  # filled
    assert book.cancel("b1").was_resting is False  # never rested
    assert book.cancel("nope") == ("nope", False, 0)


def test_cancel_middle_head_and_tail_keep_fifo() -> None:
    book = OrderBook()
    for i in range(5):
        rest(book, f"b{i}", "A", BUY, 1, 100)
    book.cancel("b2")
    book.cancel("b0")
    book.cancel("b4")
    assert ids_at(book, BUY) == ["b1", "b3"]
    assert book.best_bid() == (100, 2)
    book.cancel("b1")
    book.cancel("b3")
    assert book.best_bid() is None
    rest(book, "b5", "A", BUY, 1, 100)
    assert ids_at(book, BUY) == ["b5"]


def test_cancel_of_a_deep_level_leaves_the_others() -> None:
    book = OrderBook()
    for price in (99, 100, 98, 101, 97):
        rest(book, f"s{price}", "A", SELL, 1, price)
    book.cancel("s99")
    book.cancel("s101")
    assert book.depth(10).asks == [(97, 1), (98, 1), (100, 1)]


# ------------------------------------------------------------------- recovery


def test_add_resting_rebuilds_a_book_without_matching() -> None:
    book = OrderBook(next_seq=1)
    book.add_resting("b2", "A", BUY, 5, 100, 12, GTC)
    book.add_resting("s1", "B", SELL, 5, 101, 11)
    book.add_resting("b1", "C", BUY, 5, 100, 10)  # earlier seq: goes ahead of b2
    book.add_resting("b3", "C", BUY, 5, 100, 13)

    assert ids_at(book, BUY) == ["b1", "b2", "b3"]
    assert book.next_seq == 14
    assert book.get("b2") == RestingOrder("b2", "A", BUY, 100, 5, 12, GTC)
    assert book.submit_limit("x", "D", BUY, 1, 99).priority_seq == 14


def test_add_resting_refuses_a_crossing_order() -> None:
    book = OrderBook()
    book.add_resting("s1", "B", SELL, 5, 101, 1)
    with pytest.raises(WouldCross):
        book.add_resting("b1", "A", BUY, 5, 101, 2)
    with pytest.raises(DuplicateOrderId):
        book.add_resting("s1", "A", SELL, 5, 105, 3)
    book.add_resting("b1", "A", BUY, 5, 100, 2)
    with pytest.raises(WouldCross):
        book.add_resting("s2", "A", SELL, 5, 99, 4)
    assert len(book) == 2


def test_add_resting_keeps_a_seeded_counter_that_is_ahead() -> None:
    book = OrderBook(next_seq=100)
    book.add_resting("b1", "A", BUY, 5, 100, 7)
    assert book.next_seq == 100


def test_snapshot_round_trip() -> None:
    book = OrderBook()
    for i, (side, price) in enumerate([(BUY, 99), (BUY, 100), (SELL, 102), (BUY, 99), (SELL, 101)]):
        rest(book, f"o{i}", f"acct{i % 2}", side, 3 + i, price)
    book.submit_limit("x", "Z", SELL, 4, 100)  # eats part of o1

    copy = OrderBook(next_seq=book.next_seq)
    for order in reversed(list(book.resting_orders())):  # any load order works
        copy.add_resting(
            order.order_id,
            order.account,
            order.side,
            order.leaves_quantity,
            order.price_ticks,
            order.priority_seq,
            order.time_in_force,
        )

    assert list(copy) == list(book)
    assert copy.depth(10) == book.depth(10)
    assert copy.next_seq == book.next_seq


# -------------------------------------------------------------------- queries


def test_depth_and_iteration_order() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 1, 98)
    rest(book, "b2", "A", BUY, 2, 99)
    rest(book, "b3", "A", BUY, 3, 98)
    rest(book, "s1", "A", SELL, 4, 101)
    rest(book, "s2", "A", SELL, 5, 100)
    rest(book, "s3", "A", SELL, 6, 103)

    depth = book.depth(2)
    assert depth.bids == [(99, 2), (98, 4)]
    assert depth.asks == [(100, 5), (101, 4)]
    assert book.depth(10).asks == [(100, 5), (101, 4), (103, 6)]
    assert book.depth(0) == ([], [])
    assert book.depth(-1) == ([], [])
    assert [o.order_id for o in book] == ["b2", "b1", "b3", "s2", "s1", "s3"]
    assert ids_at(book, SELL) == ["s2", "s1", "s3"]
    assert len(book) == 6
    assert "b1" in book
    assert book.contains("s3")
    assert "zz" not in book
    assert book.get("zz") is None


def test_empty_book_queries() -> None:
    book = OrderBook()
    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.depth(5) == ([], [])
    assert list(book) == []
    assert len(book) == 0


def test_reason_and_state_strings_are_stable() -> None:
    # The engine stores and publishes these strings.
    assert [r.value for r in CancelReason] == ["collar", "no_liquidity", "ioc", "fok", "self_trade"]
    assert [s.value for s in OrderState] == ["rested", "filled", "canceled", "unknown"]
    assert TimeInForce("gtc") is GTC
    assert Side("sell") is SELL


def test_finished_orders_are_freed_without_the_cycle_collector() -> None:
    # Orders are doubly linked; a removed one must not stay in a cycle, or every trade
    # leaves garbage for the collector, whose pauses then dominate the tail latency.
    gc.collect()
    gc.disable()
    try:
        book = OrderBook()
        for i in range(30):
            rest(book, f"s{i}", f"A{i % 3}", SELL, 5, 100 + i % 4)
        book.submit_limit("b1", "X", BUY, 43, 101)  # empties 100, partly fills s1 at 101
        market = book.submit_market("m1", "X", BUY, 200, 103)
        assert market.cancel_reason is CancelReason.NO_LIQUIDITY
        for i in range(10):
            rest(book, f"b{i}", "B", BUY, 5, 90 + i % 2)
        rest(book, "b10", "A0", BUY, 5, 89)
        for order_id in ("b0", "b4", "b9", "b1", "b3", "b5", "b7"):  # head, middle, tail...
            book.cancel(order_id)  # ...and level 91 becomes empty
        book.replace("b2", 4, 90)  # in place
        book.replace("b6", 9, 92)  # moves to a new level
        stopped = book.submit_limit("s99", "A0", SELL, 100, 80, IOC)
        assert [f.resting_order_id for f in stopped.fills] == ["b6", "b2", "b8"]
        assert stopped.cancel_reason is CancelReason.SELF_TRADE
        book.cancel("b10")
        assert len(book) == 0
        del book, market, stopped
        assert gc.collect() == 0
    finally:
        gc.enable()
