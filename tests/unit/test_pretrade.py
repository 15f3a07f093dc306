"""Pre-trade rules without I/O: parsing, ticks, band, collar, reservations, session hours."""

from __future__ import annotations

from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

import pytest

from brokerx_core.intake import (
    InstrumentTerms,
    IntakeError,
    NewOrder,
    SessionHours,
    TradingRules,
    parse_amendment,
    parse_new_order,
)
from brokerx_core.intake.pretrade import (
    check_limit_price,
    check_tradable,
    collar_price,
    parse_price,
    price_band,
    reservation_for,
)
from brokerx_core.intake.rules import parse_hhmm

RULES = TradingRules(
    shards=4,
    price_band_pct=Decimal("10"),
    market_collar_pct=Decimal("5"),
    max_open_orders=200,
    session=SessionHours(),
)
AAPL = InstrumentTerms("AAPL", Decimal("0.01"), Decimal("190.00"), None, "active")


def order(**changes: Any) -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": "190.00",
    } | changes


def code_of(call: Any) -> str:
    with pytest.raises(IntakeError) as caught:
        call()
    return caught.value.code


# --- parsing -------------------------------------------------------------------------


def test_a_limit_order_parses_with_defaults() -> None:
    parsed = parse_new_order(order(symbol=" aapl "))

    assert parsed == NewOrder("AAPL", "buy", "limit", 10, Decimal("190.00"), "day", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("190.25", Decimal("190.25")),
        (Decimal("190.25"), Decimal("190.25")),
        (190, Decimal("190")),
        (" 0.5 ", Decimal("0.5")),
        # A decimal decoded from JSON keeps every digit a float would lose.
        (Decimal("190.1000000000000000001"), Decimal("190.1000000000000000001")),
    ],
)
def test_prices_parse_exactly(value: object, expected: Decimal) -> None:
    assert parse_price(value) == expected


@pytest.mark.parametrize(
    "value", ["abc", "", "1e2", "1_000", "NaN", "Infinity", True, None, [], "-1", "0", 0]
)
def test_bad_prices_are_invalid_price(value: object) -> None:
    assert code_of(lambda: parse_price(value)) == "invalid_price"


def test_absurdly_large_prices_are_invalid_price() -> None:
    assert code_of(lambda: parse_price(Decimal("1E+400"))) == "invalid_price"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"quantity": 0}, "invalid_quantity"),
        ({"quantity": -1}, "invalid_quantity"),
        ({"quantity": Decimal("1.5")}, "invalid_quantity"),
        ({"quantity": "10"}, "invalid_quantity"),
        ({"quantity": True}, "invalid_quantity"),
        ({"quantity": 1_000_001}, "invalid_quantity"),
        ({"quantity": None}, "validation_error"),
        ({"side": "short"}, "validation_error"),
        ({"type": None}, "validation_error"),
        ({"symbol": ""}, "validation_error"),
        ({"symbol": "A" * 13}, "validation_error"),
        ({"time_in_force": "gtd"}, "validation_error"),
        ({"client_order_id": ""}, "validation_error"),
        ({"client_order_id": "bad\nid"}, "validation_error"),
        ({"limit_price": None}, "invalid_price"),
        ({"type": "market"}, "invalid_price"),
    ],
)
def test_malformed_orders_are_refused_with_their_code(changes: dict[str, Any], code: str) -> None:
    assert code_of(lambda: parse_new_order(order(**changes))) == code


def test_structure_is_checked_before_quantity_and_price() -> None:
    assert code_of(lambda: parse_new_order(order(side="x", quantity=0))) == "validation_error"
    assert code_of(lambda: parse_new_order(order(quantity=0, limit_price="x"))) == (
        "invalid_quantity"
    )


def test_market_orders_take_no_price() -> None:
    parsed = parse_new_order(order(type="market", limit_price=None, time_in_force="ioc"))

    assert parsed.limit_price is None
    assert parsed.time_in_force == "ioc"


def test_idempotency_key_becomes_the_client_order_id() -> None:
    assert parse_new_order(order(), idempotency_key="k1").client_order_id == "k1"
    assert parse_new_order(order(client_order_id="k1"), idempotency_key="k1").client_order_id == (
        "k1"
    )
    assert code_of(lambda: parse_new_order(order(client_order_id="k1"), idempotency_key="k2")) == (
        "validation_error"
    )
    assert code_of(lambda: parse_new_order(order(), idempotency_key="k" * 65)) == (
        "validation_error"
    )


def test_the_request_hash_compares_terms_not_spelling() -> None:
    a = parse_new_order(order(limit_price="190.0", client_order_id="x"))
    b = parse_new_order(order(limit_price=190, time_in_force="day", client_order_id="x"))
    c = parse_new_order(order(limit_price="190.01", client_order_id="x"))

    assert a.request_hash() == b.request_hash()
    assert a.request_hash() != c.request_hash()


def test_amendments_need_something_to_change() -> None:
    assert parse_amendment({"quantity": 5}).quantity == 5
    assert parse_amendment({"limit_price": "191"}).limit_price == Decimal("191")
    assert code_of(lambda: parse_amendment({})) == "validation_error"
    assert code_of(lambda: parse_amendment({"time_in_force": "fok"})) == "validation_error"
    assert code_of(lambda: parse_amendment({"quantity": 0})) == "invalid_quantity"
    assert code_of(lambda: parse_amendment([1])) == "validation_error"


# --- market rules --------------------------------------------------------------------


def test_band_is_ten_percent_of_the_reference_inclusive() -> None:
    assert price_band(AAPL, RULES) == (Decimal("171.00"), Decimal("209.00"))
    check_limit_price(Decimal("171.00"), AAPL, RULES)
    check_limit_price(Decimal("209"), AAPL, RULES)
    assert code_of(lambda: check_limit_price(Decimal("209.01"), AAPL, RULES)) == (
        "price_out_of_band"
    )
    assert code_of(lambda: check_limit_price(Decimal("170.99"), AAPL, RULES)) == (
        "price_out_of_band"
    )


def test_the_last_trade_price_centres_the_band() -> None:
    traded = InstrumentTerms(
        "AAPL", Decimal("0.01"), Decimal("190.00"), Decimal("100.00"), "active"
    )

    assert price_band(traded, RULES) == (Decimal("90.00"), Decimal("110.00"))


def test_prices_off_the_tick_are_invalid_tick() -> None:
    nickel = InstrumentTerms("X", Decimal("0.05"), Decimal("10.00"), None, "active")

    check_limit_price(Decimal("10.05"), nickel, RULES)
    assert code_of(lambda: check_limit_price(Decimal("10.01"), nickel, RULES)) == "invalid_tick"
    assert code_of(lambda: check_limit_price(Decimal("190.001"), AAPL, RULES)) == "invalid_tick"
    assert code_of(lambda: check_limit_price(Decimal("190.1000000000000000001"), AAPL, RULES)) == (
        "invalid_tick"
    )


def test_collar_rounds_away_from_the_reference() -> None:
    odd = InstrumentTerms("X", Decimal("0.01"), Decimal("10.01"), None, "active")

    assert collar_price("buy", AAPL, RULES) == Decimal("199.50")
    assert collar_price("sell", AAPL, RULES) == Decimal("180.50")
    assert collar_price("buy", odd, RULES) == Decimal("10.52")  # 10.5105 up
    assert collar_price("sell", odd, RULES) == Decimal("9.50")  # 9.5095 down


def test_reservations() -> None:
    limit_buy = NewOrder("AAPL", "buy", "limit", 3, Decimal("190.333"), "day")
    market_buy = NewOrder("AAPL", "buy", "market", 10, None, "day")
    sell = NewOrder("AAPL", "sell", "limit", 7, Decimal("190"), "day")

    assert reservation_for(limit_buy, AAPL, RULES).cash == Decimal("571.00")  # 570.999 up
    market = reservation_for(market_buy, AAPL, RULES)
    assert (market.cash, market.price) == (Decimal("1995.00"), Decimal("199.50"))
    shares = reservation_for(sell, AAPL, RULES)
    assert (shares.cash, shares.shares) == (Decimal("0.00"), 7)


def test_halted_instruments_and_closed_sessions_are_market_closed() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    halted = InstrumentTerms("AAPL", Decimal("0.01"), Decimal("190"), None, "halted")
    closed = TradingRules(4, Decimal(10), Decimal(5), 200, SessionHours(time(13, 0), time(20, 0)))

    check_tradable(AAPL, RULES, now)
    assert code_of(lambda: check_tradable(halted, RULES, now)) == "market_closed"
    assert code_of(lambda: check_tradable(AAPL, closed, now)) == "market_closed"


# --- session hours -------------------------------------------------------------------


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 5, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("opens", "closes", "open_at", "closed_at"),
    [
        (None, None, [at(0), at(12), at(23, 59)], []),
        ("13:30", "20:00", [at(13, 30), at(19, 59)], [at(13, 29), at(20), at(3)]),
        ("22:00", "06:00", [at(22), at(23, 59), at(0), at(5, 59)], [at(6), at(12), at(21, 59)]),
        (None, "16:00", [at(0), at(15, 59)], [at(16), at(23)]),
        ("09:00", None, [at(9), at(23, 59)], [at(8, 59)]),
        ("16:00", "16:00", [at(0), at(16), at(23)], []),
    ],
)
def test_session_hours(
    opens: str | None, closes: str | None, open_at: list[datetime], closed_at: list[datetime]
) -> None:
    hours = SessionHours(parse_hhmm(opens), parse_hhmm(closes))

    assert all(hours.is_open(t) for t in open_at)
    assert not any(hours.is_open(t) for t in closed_at)


def test_last_close() -> None:
    hours = SessionHours(None, parse_hhmm("16:00"))

    assert hours.last_close(at(17)) == at(16)
    assert hours.last_close(at(16)) == at(16)
    assert hours.last_close(at(15)) == datetime(2026, 1, 4, 16, 0, tzinfo=UTC)
    assert SessionHours().last_close(at(17)) is None


@pytest.mark.parametrize("value", ["9", "25:00", "12:60", "12-00", "12:0"])
def test_malformed_session_times_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="."):
        parse_hhmm(value)
