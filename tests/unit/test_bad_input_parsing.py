"""The parsers behind the bad-input answers (tests/integration/test_bad_input_answers.py):
every input is refused with its own error, never with an exception nobody maps."""

from __future__ import annotations

from decimal import Decimal

import pyotp
import pytest

from brokerx_api.accounts.errors import InvalidAmount
from brokerx_api.accounts.schemas import parse_deposit_request
from brokerx_api.auth import totp
from brokerx_api.auth.schemas import LoginIn, possible_account_email
from brokerx_api.auth.throttle import identity_of
from brokerx_api.orders.errors import OrderValidationFailed
from brokerx_api.orders.service import decode_body, parse_if_match
from brokerx_core.auth.otp import well_formed_code
from brokerx_core.intake import (
    InvalidPrice,
    InvalidQuantity,
    RequestInvalid,
    UnknownSymbol,
    parse_amendment,
    parse_new_order,
)
from brokerx_core.intake.pretrade import MAX_PRICE_DIGITS, parse_price, plausible_symbol

HUGE_EXPONENT = "1e9999999999999999999"


def order_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": "190.00",
    }
    return body | changes


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (f'{{"limit_price": {HUGE_EXPONENT}}}', InvalidPrice),
        (f'{{"limit_price": -{HUGE_EXPONENT}}}', InvalidPrice),
        (f'{{"limit_price": {"9" * 5000}}}', InvalidPrice),
        (f'{{"quantity": {HUGE_EXPONENT}}}', InvalidQuantity),
        (f'{{"quantity": {"9" * 5000}}}', InvalidQuantity),
    ],
)
def test_a_number_decimal_or_int_cannot_hold_is_refused_by_its_field(
    raw: str, error: type[Exception]
) -> None:
    body = decode_body(raw.encode())
    assert isinstance(body, dict)

    with pytest.raises(error):
        parse_new_order(order_body(**body))
    with pytest.raises(error):
        parse_amendment(body)


def test_ordinary_numbers_decode_as_before() -> None:
    assert decode_body(b'{"quantity": 10, "limit_price": 190.25}') == {
        "quantity": 10,
        "limit_price": Decimal("190.25"),
    }
    with pytest.raises(RequestInvalid):
        decode_body(b"{not json")


@pytest.mark.parametrize("amount", [HUGE_EXPONENT, f"-{HUGE_EXPONENT}", "1e-9999999999999999999"])
def test_a_deposit_amount_decimal_cannot_hold_is_an_invalid_amount(amount: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_deposit_request(f'{{"amount": {amount}}}'.encode())


def test_a_price_may_carry_at_most_the_digits_decimal_keeps_exact() -> None:
    longest = "190." + "0" * (MAX_PRICE_DIGITS - 3)
    assert parse_price(longest) == Decimal("190")
    with pytest.raises(InvalidPrice):
        parse_price(longest + "0")
    with pytest.raises(InvalidPrice):
        parse_price(Decimal("190." + "0" * 20_000))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ('"7"', 7), ("9" * 18, int("9" * 18))],
)
def test_an_if_match_of_up_to_18_digits_is_a_version(value: str, expected: int) -> None:
    assert parse_if_match(value, required=True) == expected


@pytest.mark.parametrize("value", ["9" * 19, "9" * 5000, f'"{"9" * 5000}"', "١"])
def test_a_longer_if_match_is_not_a_version(value: str) -> None:
    with pytest.raises(OrderValidationFailed):
        parse_if_match(value, required=True)


@pytest.mark.parametrize("symbol", ["AAPL", "BRK.B", "A", "X" * 12])
def test_a_plausible_symbol(symbol: str) -> None:
    assert plausible_symbol(symbol)


@pytest.mark.parametrize("symbol", ["AA\ud800", "AA\x00PL", "AA PL", "ÄPPL", "X" * 13, ""])
def test_an_implausible_symbol(symbol: str) -> None:
    assert not plausible_symbol(symbol)


@pytest.mark.parametrize("symbol", ["AA\ud800", "AA\x00PL", "AA PL", "ÄPL"])
def test_a_symbol_no_instrument_can_have_is_unknown_without_a_lookup(symbol: str) -> None:
    with pytest.raises(UnknownSymbol) as refused:
        parse_new_order(order_body(symbol=symbol))
    refused.value.detail.encode()  # the detail renders: no lone surrogate in it


def test_a_bad_price_is_still_reported_before_an_implausible_symbol() -> None:
    with pytest.raises(InvalidPrice):
        parse_new_order(order_body(symbol="AA\ud800", limit_price="abc"))


@pytest.mark.parametrize("code", ["١٢٣٤٥٦", "\ud800" * 6, "12\x003456", "12345", ""])
def test_a_totp_code_that_is_not_six_ascii_digits_is_refused(code: str) -> None:
    secret = pyotp.random_base32()
    assert totp.accepted_step(secret, code, 1_700_000_000.0, None) is None
    assert not well_formed_code(code)


def test_a_right_totp_code_is_still_accepted() -> None:
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(1_700_000_000)
    assert totp.accepted_step(secret, f" {code} ", 1_700_000_000.0, None) is not None
    assert well_formed_code(f" {code} ")


def test_any_string_has_a_throttle_identity() -> None:
    assert identity_of("\ud800@x.com") != identity_of("\ud801@x.com")
    assert identity_of(" Bob@Example.com ") == identity_of("bob@example.com")


@pytest.mark.parametrize(
    "email", ["\ud800@x.com", "a\x00@x.com", "a" * 321, "", "josé@example.com"]
)
def test_an_email_no_account_can_have(email: str) -> None:
    assert not possible_account_email(email)
    assert LoginIn(email=email, password="x").email == email.strip()


def test_a_login_email_is_normalised_for_the_lookup() -> None:
    assert possible_account_email("bob@example.com")
    assert LoginIn(email=" Bob@Example.COM ", password="x").email == "bob@example.com"
