"""Example tests of replacing a resting order in the order book (DESIGN.md, "Matching rules")."""

from __future__ import annotations

import pytest

from brokerx_matching.book import (
    CancelReason,
    MatchResult,
    OrderBook,
    OrderBookError,
    OrderState,
    RestingOrder,
)
from tests.unit.book_helpers import BUY, DAY, GTC, IOC, SELL, fills_of, ids_at, rest

# ------------------------------------------------------------------- replace


def test_replace_quantity_decrease_keeps_priority() -> None:
    book = OrderBook()
    seq1 = rest(book, "b1", "A", BUY, 10, 100)
    rest(book, "b2", "B", BUY, 10, 100)

    result = book.replace("b1", 4, 100)

    assert result == MatchResult("b1", OrderState.RESTED, (), 0, 4, 0, None, seq1)
    assert ids_at(book, BUY) == ["b1", "b2"]
    assert book.best_bid() == (100, 14)
    assert fills_of(book.submit_limit("s1", "C", SELL, 4, 100)) == [("b1", "s1", 100, 4)]


def test_replace_same_terms_keeps_priority() -> None:
    book = OrderBook()
    seq1 = rest(book, "b1", "A", BUY, 10, 100)
    rest(book, "b2", "B", BUY, 10, 100)
    assert book.replace("b1", 10, 100).priority_seq == seq1
    assert ids_at(book, BUY) == ["b1", "b2"]


def test_replace_quantity_increase_loses_priority() -> None:
    book = OrderBook()
    seq1 = rest(book, "b1", "A", BUY, 10, 100)
    rest(book, "b2", "B", BUY, 10, 100)

    result = book.replace("b1", 11, 100)

    assert result.state is OrderState.RESTED
    assert result.priority_seq is not None
    assert result.priority_seq > seq1
    assert ids_at(book, BUY) == ["b2", "b1"]
    assert book.best_bid() == (100, 21)


def test_replace_price_change_loses_priority_even_when_smaller() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 10, 99)
    rest(book, "b2", "B", BUY, 10, 100)

    result = book.replace("b1", 5, 100)

    assert result.leaves_quantity == 5
    assert ids_at(book, BUY) == ["b2", "b1"]
    assert book.depth(5).bids == [(100, 15)]


def test_replace_that_crosses_trades_as_aggressor() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 10, 99)
    rest(book, "s1", "B", SELL, 4, 100)
    rest(book, "s2", "B", SELL, 4, 101)

    result = book.replace("b1", 10, 100)

    assert fills_of(result) == [("s1", "b1", 100, 4)]
    assert result.state is OrderState.RESTED
    assert result.leaves_quantity == 6
    assert book.get("b1") == RestingOrder("b1", "A", BUY, 100, 6, 4, DAY)
    assert book.best_ask() == (101, 4)


def test_replace_that_crosses_fully_fills() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 3, 105)
    rest(book, "b1", "B", BUY, 5, 100)

    result = book.replace("b1", 3, 105)

    assert result.state is OrderState.FILLED
    assert fills_of(result) == [("s1", "b1", 105, 3)]
    assert len(book) == 0


def test_replace_that_crosses_its_own_account_is_canceled() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 3, 105)
    rest(book, "b1", "A", BUY, 5, 100)

    result = book.replace("b1", 5, 105)

    assert result.state is OrderState.CANCELED
    assert result.cancel_reason is CancelReason.SELF_TRADE
    assert result.canceled_quantity == 5
    assert not book.contains("b1")


def test_replace_of_unknown_order() -> None:
    book = OrderBook()
    result = book.replace("nope", 5, 100)
    assert result == MatchResult("nope", OrderState.UNKNOWN, (), 0, 0, 0, None, None)


def test_replace_can_change_time_in_force_without_losing_priority() -> None:
    book = OrderBook()
    seq = rest(book, "b1", "A", BUY, 10, 100)
    result = book.replace("b1", 10, 100, GTC)
    assert result.priority_seq == seq
    assert book.get("b1") == RestingOrder("b1", "A", BUY, 100, 10, seq, GTC)


def test_replace_rejects_bad_input() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 10, 100)
    with pytest.raises(OrderBookError):
        book.replace("b1", 0, 100)
    with pytest.raises(OrderBookError):
        book.replace("b1", 5, 100, IOC)
    assert book.get("b1") == RestingOrder("b1", "A", BUY, 100, 10, 1, DAY)
