"""The trading rules intake enforces, read once from settings: band, collar, limits, hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from brokerx_core.settings import BrokerXSettings

# Largest quantity one order may carry (API.md: invalid_quantity above it).
MAX_ORDER_QUANTITY = 1_000_000


def parse_hhmm(value: str | None) -> time | None:
    """`"HH:MM"` (UTC) → time; None or blank → None; anything else → ValueError."""
    if value is None or not value.strip():
        return None
    hours, sep, minutes = value.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"session time must be HH:MM, got {value!r}")
    return time(int(hours), int(minutes))


@dataclass(frozen=True, slots=True)
class SessionHours:
    """Daily trading session in UTC. No open means midnight; no close means midnight next day.

    Both unset: always open. open == close: open around the clock (DAY orders still
    expire at the close). open > close: an overnight session (22:00 → 06:00).
    """

    open: time | None = None  # wall-clock UTC times (any tzinfo is ignored)
    close: time | None = None

    def is_open(self, now: datetime) -> bool:
        """Whether orders are accepted at `now`."""
        if self.open is None and self.close is None:
            return True
        current = now.astimezone(UTC).time()
        start = self.open.replace(tzinfo=None) if self.open else time(0, 0)
        if self.close is None:
            return current >= start
        end = self.close.replace(tzinfo=None)
        if start == end:
            return True
        if start < end:
            return start <= current < end
        return current >= start or current < end

    def last_close(self, now: datetime) -> datetime | None:
        """The most recent session close at or before `now` (None without a close)."""
        if self.close is None:
            return None
        now = now.astimezone(UTC)
        today = datetime.combine(now.date(), self.close.replace(tzinfo=None), tzinfo=UTC)
        return today if today <= now else today - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TradingRules:
    """Everything intake needs from settings, parsed once."""

    shards: int
    price_band_pct: Decimal
    market_collar_pct: Decimal
    max_open_orders: int
    session: SessionHours
    max_order_quantity: int = MAX_ORDER_QUANTITY

    @classmethod
    def from_settings(cls, settings: BrokerXSettings) -> TradingRules:
        """Rules of a process; raises ValueError on malformed session hours."""
        return cls(
            shards=settings.matching_shards,
            price_band_pct=Decimal(settings.price_band_pct),
            market_collar_pct=Decimal(settings.market_collar_pct),
            max_open_orders=settings.max_open_orders,
            session=SessionHours(
                parse_hhmm(settings.session_open), parse_hhmm(settings.session_close)
            ),
        )
