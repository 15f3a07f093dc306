"""Example tests of market, IOC and FOK orders in the order book (DESIGN.md, "Matching rules")."""

from __future__ import annotations

import pytest

from brokerx_matching.book import (
    CancelReason,
    MatchResult,
    OrderBook,
    OrderState,
    RestingOrder,
    TimeInForce,
)
from tests.unit.book_helpers import BUY, DAY, FOK, GTC, IOC, SELL, fills_of, rest

# --------------------------------------------------------------- market orders


def test_market_buy_trades_up_to_the_collar_inclusive() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "A", SELL, 5, 101)
    rest(book, "s3", "A", SELL, 5, 102)

    result = book.submit_market("m1", "B", BUY, 20, 101)

    assert fills_of(result) == [("s1", "m1", 100, 5), ("s2", "m1", 101, 5)]
    assert result.state is OrderState.CANCELED
    assert result.cancel_reason is CancelReason.COLLAR
    assert (result.filled_quantity, result.canceled_quantity, result.leaves_quantity) == (10, 10, 0)
    assert not book.contains("m1")
    assert book.best_ask() == (102, 5)


def test_market_sell_trades_down_to_the_collar() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 5, 100)
    rest(book, "b2", "A", BUY, 5, 99)

    result = book.submit_market("m1", "B", SELL, 7, 99)

    assert fills_of(result) == [("b1", "m1", 100, 5), ("b2", "m1", 99, 2)]
    assert result.state is OrderState.FILLED
    assert result.cancel_reason is None


def test_market_order_against_an_empty_side() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 5, 100)

    result = book.submit_market("m1", "B", BUY, 5, 200)

    assert result == MatchResult(
        "m1", OrderState.CANCELED, (), 0, 0, 5, CancelReason.NO_LIQUIDITY, None
    )
    assert len(book) == 1


def test_market_order_that_empties_the_side_is_no_liquidity() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)

    result = book.submit_market("m1", "B", BUY, 8, 200)

    assert result.filled_quantity == 5
    assert result.canceled_quantity == 3
    assert result.cancel_reason is CancelReason.NO_LIQUIDITY


def test_market_order_fully_beyond_the_collar() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)

    result = book.submit_market("m1", "B", BUY, 5, 99)

    assert result.fills == ()
    assert result.cancel_reason is CancelReason.COLLAR
    assert book.best_ask() == (100, 5)


def test_market_fok_that_the_collar_stops_does_not_trade_at_all() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "A", SELL, 5, 102)  # beyond the collar: does not count

    result = book.submit_market("m1", "B", BUY, 8, 101, FOK)

    assert result == MatchResult("m1", OrderState.CANCELED, (), 0, 0, 8, CancelReason.FOK, None)
    assert book.best_ask() == (100, 5)
    assert len(book) == 2


def test_market_fok_with_too_little_liquidity_does_not_trade_at_all() -> None:
    book = OrderBook()
    rest(book, "b1", "A", BUY, 5, 100)

    result = book.submit_market("m1", "B", SELL, 6, 90, FOK)

    assert result == MatchResult("m1", OrderState.CANCELED, (), 0, 0, 6, CancelReason.FOK, None)
    assert book.best_bid() == (100, 5)


def test_market_fok_fills_entirely_within_the_collar() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "C", SELL, 5, 101)
    rest(book, "s3", "C", SELL, 5, 102)

    result = book.submit_market("m1", "B", BUY, 8, 101, FOK)

    assert result.state is OrderState.FILLED
    assert fills_of(result) == [("s1", "m1", 100, 5), ("s2", "m1", 101, 3)]
    assert book.best_ask() == (101, 2)


@pytest.mark.parametrize("tif", [DAY, GTC, IOC])
def test_market_order_of_any_other_time_in_force_trades_as_ioc(tif: TimeInForce) -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)

    result = book.submit_market("m1", "B", BUY, 8, 101, tif)

    assert fills_of(result) == [("s1", "m1", 100, 5)]
    assert result.cancel_reason is CancelReason.NO_LIQUIDITY
    assert not book.contains("m1")


# ----------------------------------------------------------------- ioc and fok


def test_ioc_trades_what_crosses_and_cancels_the_rest() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "A", SELL, 5, 103)

    result = book.submit_limit("b1", "B", BUY, 8, 101, IOC)

    assert fills_of(result) == [("s1", "b1", 100, 5)]
    assert result.state is OrderState.CANCELED
    assert result.cancel_reason is CancelReason.IOC
    assert result.canceled_quantity == 3
    assert not book.contains("b1")
    assert book.best_bid() is None


def test_ioc_fully_filled_is_filled() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)

    result = book.submit_limit("b1", "B", BUY, 5, 100, IOC)

    assert result.state is OrderState.FILLED
    assert result.cancel_reason is None


def test_ioc_with_nothing_crossing_cancels_everything() -> None:
    book = OrderBook()
    result = book.submit_limit("b1", "B", BUY, 5, 100, IOC)
    assert result == MatchResult("b1", OrderState.CANCELED, (), 0, 0, 5, CancelReason.IOC, None)


def test_fok_fills_entirely_across_levels() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "C", SELL, 5, 101)

    result = book.submit_limit("b1", "B", BUY, 10, 101, FOK)

    assert result.state is OrderState.FILLED
    assert fills_of(result) == [("s1", "b1", 100, 5), ("s2", "b1", 101, 5)]


def test_fok_that_cannot_fill_entirely_does_not_trade_at_all() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "A", SELL, 5, 102)  # beyond the limit: does not count

    result = book.submit_limit("b1", "B", BUY, 6, 101, FOK)

    assert result == MatchResult("b1", OrderState.CANCELED, (), 0, 0, 6, CancelReason.FOK, None)
    assert book.get("s1") == RestingOrder("s1", "A", SELL, 100, 5, 1, DAY)
    assert book.best_ask() == (100, 5)


def test_fok_does_not_count_the_same_accounts_liquidity() -> None:
    book = OrderBook()
    rest(book, "s1", "A", SELL, 5, 100)
    rest(book, "s2", "B", SELL, 5, 100)  # the buyer's own order
    rest(book, "s3", "C", SELL, 5, 100)

    # 10 of the 15 crossing shares are others', but the buyer's own order comes before
    # s3: matching would stop there (STP), so the fok cannot fill and nothing trades.
    result = book.submit_limit("b1", "B", BUY, 10, 100, FOK)

    assert result.cancel_reason is CancelReason.FOK
    assert result.fills == ()
    assert book.best_ask() == (100, 15)

    # What sits ahead of the own order is enough: fills entirely.
    result = book.submit_limit("b2", "B", BUY, 5, 100, FOK)
    assert result.state is OrderState.FILLED
    assert fills_of(result) == [("s1", "b2", 100, 5)]
