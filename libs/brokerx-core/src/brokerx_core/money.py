"""Money, price and quantity helpers. Never float: Decimal at the edges, integers inside."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")
PRICE_QUANTUM = Decimal("0.0001")
ZERO = Decimal("0")
ZERO_CASH = Decimal("0.00")


def to_decimal(value: object) -> Decimal:
    """Parse a JSON string/number into a finite Decimal; raise ValueError otherwise.

    Floats are converted through `str` so `0.1` stays `0.1`, not its binary expansion.
    """
    if isinstance(value, bool):
        raise ValueError("not a number")
    try:
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValueError("not a decimal number") from exc
    if not result.is_finite():
        raise ValueError("not a finite number")
    return result


def decimal_places(value: Decimal) -> int:
    """Number of digits after the point that the value really carries (1.50 → 1).

    Exact at any length: `normalize()` would round to the context's 28 digits first.
    """
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    if not any(digits):
        return 0
    places = -exponent
    index = len(digits) - 1
    while places > 0 and index >= 0 and digits[index] == 0:
        places -= 1
        index -= 1
    return max(0, places)


def cash(value: Decimal) -> Decimal:
    """Round a cash amount to cents (banker's rounding) for storage."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def cash_up(value: Decimal) -> Decimal:
    """Round up to the cent: what a reservation must hold to cover `value`."""
    return value.quantize(CENT, rounding=ROUND_UP)


def price(value: Decimal) -> Decimal:
    """Normalise a price to the 4-decimal storage quantum."""
    return value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)


def is_on_tick(value: Decimal, tick_size: Decimal) -> bool:
    """True when `value` is a whole multiple of `tick_size`."""
    return (value % tick_size) == 0


def to_ticks(value: Decimal, tick_size: Decimal) -> int:
    """Price → integer ticks (exact; caller checked `is_on_tick`)."""
    return int(value / tick_size)


def from_ticks(ticks: int, tick_size: Decimal) -> Decimal:
    """Integer ticks → price Decimal."""
    return price(tick_size * ticks)


def floor_to_tick(value: Decimal, tick_size: Decimal) -> Decimal:
    """Largest on-tick price ≤ value."""
    return price((value / tick_size).to_integral_value(rounding=ROUND_DOWN) * tick_size)


def ceil_to_tick(value: Decimal, tick_size: Decimal) -> Decimal:
    """Smallest on-tick price ≥ value."""
    return price((value / tick_size).to_integral_value(rounding=ROUND_UP) * tick_size)


def fmt(value: Decimal | None) -> str | None:
    """Decimal → JSON string (None stays None), without exponent notation."""
    if value is None:
        return None
    return format(value, "f")
