"""Money helpers: exact decimals, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokerx_core.money import cash, decimal_places, from_ticks, is_on_tick, to_decimal, to_ticks


@pytest.mark.parametrize(
    ("text", "places"),
    [
        ("1", 0),
        ("1.50", 1),
        ("0.000000", 0),
        ("0E-8", 0),
        ("100.25", 2),
        ("1E+3", 0),
        # Longer than the 28-digit context: normalize() would round this to 100.
        ("100.000000000000000000000000000001", 30),
    ],
)
def test_decimal_places_is_exact(text: str, places: int) -> None:
    assert decimal_places(Decimal(text)) == places


def test_to_decimal_refuses_non_numbers_and_keeps_floats_short() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal("190.25") == Decimal("190.25")
    for bad in ("abc", "NaN", "Infinity", True, None, [1]):
        with pytest.raises(ValueError):  # noqa: PT011
            to_decimal(bad)


def test_cash_rounds_half_even_to_the_cent() -> None:
    assert cash(Decimal("1.005")) == Decimal("1.00")
    assert cash(Decimal("1.015")) == Decimal("1.02")


def test_ticks_round_trip() -> None:
    tick = Decimal("0.01")
    assert is_on_tick(Decimal("190.25"), tick)
    assert not is_on_tick(Decimal("190.255"), tick)
    assert to_ticks(Decimal("190.25"), tick) == 19025
    assert from_ticks(19025, tick) == Decimal("190.2500")
