"""Pre-trade checks without I/O: parse a request, check ticks, band and hours, size the
reservation. `placement` and `amend` run them against rows read in their transaction.

Prices arrive as JSON strings or numbers; the api decodes numbers straight to Decimal
(never float), so `101.25` and `"101.25"` are the same price.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from brokerx_core.intake.errors import (
    InvalidPrice,
    InvalidQuantity,
    InvalidTick,
    MarketClosed,
    PriceOutOfBand,
    RequestInvalid,
    UnknownSymbol,
)
from brokerx_core.intake.rules import MAX_ORDER_QUANTITY, TradingRules
from brokerx_core.money import ZERO_CASH, cash_up, ceil_to_tick, floor_to_tick, fmt

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
SIDES: tuple[str, ...] = ("buy", "sell")
ORDER_TYPES: tuple[str, ...] = ("market", "limit")
TIMES_IN_FORCE: tuple[str, ...] = ("day", "gtc", "ioc", "fok")
# A replace changes a resting order: it must still be able to rest afterwards.
REPLACE_TIMES_IN_FORCE: tuple[str, ...] = ("day", "gtc")
# Above any listed price; keeps every Decimal operation on prices exact.
MAX_PRICE = Decimal("1000000000")
# Digits a price may be written with, trailing zeros included: the default Decimal
# context's precision, so the tick, band and reservation arithmetic stays exact, and far
# within what PostgreSQL's NUMERIC takes (`190.` and 20,000 zeros it refuses outright).
MAX_PRICE_DIGITS = 28
CLIENT_ORDER_ID_MAX_LENGTH = 64
SYMBOL_MAX_LENGTH = 12
_PLAIN_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
# Printable ASCII without spaces: every listed symbol is, and nothing else can be sent
# to PostgreSQL safely (a NUL, a lone surrogate from JSON's "\ud800").
_PLAUSIBLE_SYMBOL = re.compile(rf"[!-~]{{1,{SYMBOL_MAX_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A well-formed order request (shape checked; market rules not yet)."""

    symbol: str
    side: str
    type: str
    quantity: int
    limit_price: Decimal | None
    time_in_force: str = "day"
    client_order_id: str | None = None

    def request_hash(self) -> str:
        """Fingerprint of the terms: a `client_order_id` replay must carry the same ones."""
        price = "" if self.limit_price is None else format(self.limit_price.normalize(), "f")
        terms = "|".join(
            (self.symbol, self.side, self.type, str(self.quantity), price, self.time_in_force)
        )
        return hashlib.sha256(terms.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Amendment:
    """New terms of a replace; None keeps the current value."""

    quantity: int | None = None
    limit_price: Decimal | None = None
    time_in_force: str | None = None


@dataclass(frozen=True, slots=True)
class InstrumentTerms:
    """What intake needs of an instrument row."""

    symbol: str
    tick_size: Decimal
    reference_price: Decimal
    last_price: Decimal | None
    status: str

    @property
    def reference(self) -> Decimal:
        """The band's centre: the last trade price, else the seeded reference price."""
        return self.last_price if self.last_price is not None else self.reference_price


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an order holds: cash for a buy, shares for a sell."""

    cash: Decimal
    shares: int
    price: Decimal | None  # the collar backing a market buy, else None


# --- parsing -------------------------------------------------------------------------


def parse_quantity(value: object) -> int:
    """A positive whole number of shares, at most MAX_ORDER_QUANTITY."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQuantity("quantity must be a whole number of shares")
    if value <= 0:
        raise InvalidQuantity("quantity must be positive")
    if value > MAX_ORDER_QUANTITY:
        raise InvalidQuantity(f"quantity must be at most {MAX_ORDER_QUANTITY}")
    return value


def parse_price(value: object, field: str = "limit_price") -> Decimal:
    """A positive finite decimal from a JSON string or number (never through float)."""
    if isinstance(value, bool) or value is None:
        raise InvalidPrice(f"{field} must be a decimal number")
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value.strip()):
            raise InvalidPrice(f"{field} must be a decimal number")
        result = Decimal(value.strip())
    elif isinstance(value, Decimal | int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(str(value))
    else:
        raise InvalidPrice(f"{field} must be a decimal number")
    if not result.is_finite():
        raise InvalidPrice(f"{field} must be a finite number")
    if result <= 0:
        raise InvalidPrice(f"{field} must be positive")
    if result > MAX_PRICE:
        raise InvalidPrice(f"{field} must be at most {MAX_PRICE}")
    if len(result.as_tuple().digits) > MAX_PRICE_DIGITS:
        raise InvalidPrice(f"{field} must be written with at most {MAX_PRICE_DIGITS} digits")
    return result


def plausible_symbol(symbol: str) -> bool:
    """Whether `symbol` could name an instrument (checked before any lookup: a symbol
    PostgreSQL cannot even take must not reach the query the others share)."""
    return _PLAUSIBLE_SYMBOL.fullmatch(symbol) is not None


def _choice(
    body: Mapping[str, Any],
    field: str,
    allowed: tuple[str, ...],
    errors: list[dict[str, Any]],
    default: str | None = None,
) -> str:
    value = body.get(field)
    if value is None:
        if default is None:
            errors.append({"loc": [field], "msg": "field required"})
        return default or ""
    if not isinstance(value, str) or value not in allowed:
        errors.append({"loc": [field], "msg": f"must be one of {', '.join(allowed)}"})
        return ""
    return value


def _symbol(body: Mapping[str, Any], errors: list[dict[str, Any]]) -> str:
    value = body.get("symbol")
    if value is None:
        errors.append({"loc": ["symbol"], "msg": "field required"})
        return ""
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= SYMBOL_MAX_LENGTH:
        errors.append(
            {"loc": ["symbol"], "msg": f"must be a string of 1 to {SYMBOL_MAX_LENGTH} characters"}
        )
        return ""
    return value.strip().upper()


def _client_order_id(
    value: object, idempotency_key: str | None, errors: list[dict[str, Any]]
) -> str | None:
    # `Idempotency-Key` is the same thing as `client_order_id` for orders: one of them,
    # or both when they agree.
    for loc, candidate in (("client_order_id", value), ("Idempotency-Key", idempotency_key)):
        if candidate is None:
            continue
        if (
            not isinstance(candidate, str)
            or not 1 <= len(candidate) <= CLIENT_ORDER_ID_MAX_LENGTH
            or not candidate.isprintable()
        ):
            errors.append(
                {
                    "loc": [loc],
                    "msg": f"must be 1 to {CLIENT_ORDER_ID_MAX_LENGTH} printable characters",
                }
            )
            return None
    if value is not None and idempotency_key is not None and value != idempotency_key:
        errors.append(
            {"loc": ["Idempotency-Key"], "msg": "differs from client_order_id in the body"}
        )
        return None
    result = value if value is not None else idempotency_key
    return result if isinstance(result, str) else None


def parse_new_order(body: object, *, idempotency_key: str | None = None) -> NewOrder:
    """Check the shape of a new-order body; raise the first applicable intake error.

    Structure first (`validation_error` lists every problem), then `invalid_quantity`,
    then `invalid_price` (missing for a limit order, present for a market order), then
    `unknown_symbol` for a symbol no instrument can have (the others are looked up).
    """
    if not isinstance(body, Mapping):
        raise RequestInvalid([{"loc": [], "msg": "the body must be a JSON object"}])
    errors: list[dict[str, Any]] = []
    symbol = _symbol(body, errors)
    side = _choice(body, "side", SIDES, errors)
    order_type = _choice(body, "type", ORDER_TYPES, errors)
    time_in_force = _choice(body, "time_in_force", TIMES_IN_FORCE, errors, default="day")
    client_order_id = _client_order_id(body.get("client_order_id"), idempotency_key, errors)
    if body.get("quantity") is None:
        errors.append({"loc": ["quantity"], "msg": "field required"})
    if errors:
        raise RequestInvalid(errors)
    quantity = parse_quantity(body["quantity"])
    raw_price = body.get("limit_price")
    limit_price: Decimal | None = None
    if order_type == "limit":
        if raw_price is None:
            raise InvalidPrice("limit_price is required for a limit order")
        limit_price = parse_price(raw_price)
    elif raw_price is not None:
        raise InvalidPrice("a market order takes no limit_price")
    if not plausible_symbol(symbol):
        raise UnknownSymbol(f"unknown symbol {ascii(symbol)}")
    return NewOrder(symbol, side, order_type, quantity, limit_price, time_in_force, client_order_id)


def parse_amendment(body: object) -> Amendment:
    """Check the shape of a replace body (at least one of quantity, limit_price, time_in_force)."""
    if not isinstance(body, Mapping):
        raise RequestInvalid([{"loc": [], "msg": "the body must be a JSON object"}])
    errors: list[dict[str, Any]] = []
    time_in_force: str | None = None
    if body.get("time_in_force") is not None:
        time_in_force = _choice(body, "time_in_force", REPLACE_TIMES_IN_FORCE, errors)
    if all(body.get(f) is None for f in ("quantity", "limit_price", "time_in_force")):
        errors.append(
            {"loc": [], "msg": "nothing to change: give quantity, limit_price or time_in_force"}
        )
    if errors:
        raise RequestInvalid(errors)
    quantity = parse_quantity(body["quantity"]) if body.get("quantity") is not None else None
    raw_price = body.get("limit_price")
    limit_price = parse_price(raw_price) if raw_price is not None else None
    return Amendment(quantity, limit_price, time_in_force)


# --- market rules --------------------------------------------------------------------


def display_price(value: Decimal, tick_size: Decimal) -> str:
    """A price at the instrument's precision (at least cents) for messages."""
    exponent = tick_size.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def price_band(instrument: InstrumentTerms, rules: TradingRules) -> tuple[Decimal, Decimal]:
    """Lowest and highest on-tick limit prices inside ±band of the reference (inclusive)."""
    reference = instrument.reference
    width = rules.price_band_pct / 100
    low = ceil_to_tick(reference * (1 - width), instrument.tick_size)
    high = floor_to_tick(reference * (1 + width), instrument.tick_size)
    return max(low, instrument.tick_size), high


def collar_price(side: str, instrument: InstrumentTerms, rules: TradingRules) -> Decimal:
    """How far a market order may trade: ref ± collar, rounded to the tick away from ref."""
    width = rules.market_collar_pct / 100
    if side == "buy":
        return ceil_to_tick(instrument.reference * (1 + width), instrument.tick_size)
    return max(
        floor_to_tick(instrument.reference * (1 - width), instrument.tick_size),
        instrument.tick_size,
    )


def check_tradable(instrument: InstrumentTerms, rules: TradingRules, now: datetime) -> None:
    """`market_closed` when the instrument is halted or the session is closed."""
    if instrument.status != "active":
        raise MarketClosed(f"trading in {instrument.symbol} is halted")
    if not rules.session.is_open(now):
        hours = rules.session
        start = hours.open.strftime("%H:%M") if hours.open else "00:00"
        end = hours.close.strftime("%H:%M") if hours.close else "24:00"
        raise MarketClosed(f"the market is closed (session {start}-{end} UTC)")


def check_limit_price(price: Decimal, instrument: InstrumentTerms, rules: TradingRules) -> None:
    """`invalid_tick` off the tick grid; `price_out_of_band` outside the band."""
    tick = instrument.tick_size
    if price % tick != 0:
        raise InvalidTick(
            f"limit_price must be a multiple of the tick size {display_price(tick, tick)}",
            extra={"tick_size": fmt(tick.normalize())},
        )
    low, high = price_band(instrument, rules)
    if not low <= price <= high:
        band = {
            "low": display_price(low, tick),
            "high": display_price(high, tick),
            "reference": display_price(instrument.reference, tick),
            "pct": fmt(rules.price_band_pct),
        }
        raise PriceOutOfBand(
            f"limit_price must lie within {band['low']} and {band['high']}"
            f" (±{band['pct']}% of the reference price {band['reference']})",
            extra={"band": band},
        )


def reservation_for(
    order: NewOrder, instrument: InstrumentTerms, rules: TradingRules
) -> Reservation:
    """What intake reserves (docs/trading.md: buy limit qty × limit, market buy qty × collar,
    sell the shares)."""
    if order.side == "sell":
        return Reservation(ZERO_CASH, order.quantity, None)
    if order.limit_price is not None:
        return Reservation(cash_up(order.quantity * order.limit_price), 0, None)
    collar = collar_price("buy", instrument, rules)
    return Reservation(cash_up(order.quantity * collar), 0, collar)
