"""Response bodies of the instrument and market-data endpoints (API.md, "Instruments and
market data"). Prices are decimal strings; quantities are integers."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from brokerx_core.money import CENT, decimal_places, to_decimal


def display_price(value: Decimal | str | None) -> str | None:
    """A price as clients see it everywhere: cents at least, more digits only when it
    carries them ("190.0000" → "190.00", "190.1250" → "190.125")."""
    if value is None:
        return None
    number = to_decimal(value)
    if decimal_places(number) <= 2:
        return format(number.quantize(CENT), "f")
    return format(number.normalize(), "f")


# Prices read from the engine's read models are re-rendered (and a non-number is refused,
# which makes the whole read model count as unreadable).
Price = Annotated[str, BeforeValidator(display_price)]


class InstrumentOut(BaseModel):
    symbol: str = Field(examples=["AAPL"])
    name: str = Field(examples=["Apple Inc."])
    tick_size: str = Field(examples=["0.01"])
    reference_price: str = Field(examples=["190.00"])
    last_price: str | None = Field(examples=["190.25"])
    status: str = Field(examples=["active"])


class InstrumentList(BaseModel):
    items: list[InstrumentOut]


class QuoteOut(BaseModel):
    """Best bid/ask and last trade; every field but `symbol` is null when unknown."""

    model_config = ConfigDict(extra="ignore")

    symbol: str
    bid: Price | None = None
    bid_size: int | None = None
    ask: Price | None = None
    ask_size: int | None = None
    last: Price | None = None
    last_size: int | None = None
    ts: datetime | None = None


class BookOut(BaseModel):
    """Aggregated price levels, best first: `[[price, quantity], ...]`."""

    model_config = ConfigDict(extra="ignore")

    symbol: str
    bids: list[tuple[Price, int]] = Field(default_factory=list, examples=[[["189.99", 300]]])
    asks: list[tuple[Price, int]] = Field(default_factory=list, examples=[[["190.01", 200]]])
    ts: datetime | None = None


class PublicTradeOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    price: Price
    quantity: int
    ts: datetime


class TradeList(BaseModel):
    """Recent public trades, newest first (no cursor: only the last 100 are kept)."""

    items: list[PublicTradeOut]
    next_cursor: str | None = None
