"""What the engine's modules share: command outcomes, the engine's own error, and the
conversion of an order's terms (side, time in force, price) to the book's.

`MatchingEngine` (engine.py) keeps a shard's memory and a batch's bookkeeping,
commands.py holds the rules of each command and fills.py what a match does to the
orders; all three use these, and this module depends on none of them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from brokerx_matching.book import Side, TimeInForce

SIDES = {"buy": Side.BUY, "sell": Side.SELL}
TIFS = {
    "day": TimeInForce.DAY,
    "gtc": TimeInForce.GTC,
    "ioc": TimeInForce.IOC,
    "fok": TimeInForce.FOK,
}
RESTING_TIFS = ("day", "gtc")

Outcome = Literal["applied", "rejected", "skipped"]


class EngineInconsistency(RuntimeError):
    """Engine memory disagrees with itself (a bug): the batch fails and the shard rebuilds."""


def price_ticks(value: Decimal, tick_size: Decimal) -> int | None:
    """Integer ticks of an on-tick price, None when the price is off tick."""
    ticks, remainder = divmod(value, tick_size)
    return int(ticks) if not remainder else None
