"""Demo liquidity: a two-sided ladder of limit orders for every instrument.

Only with `MARKET_MAKER_ENABLED` (on for `make run`, off by default in production).
For each active instrument the market maker keeps `market_maker_levels` GTC bids and
asks around a reference price that moves by a random walk, bounded to half the price
band around the engine's reference so the whole ladder stays inside the band. The
spread is `market_maker_spread_pct` of the price (0.1 % by default), never under two
ticks. Orders enter through `brokerx_core.intake.place_order`, the same code as a
client's order (same checks, reservations, outbox and XADD); quotes that no longer fit
the ladder are withdrawn with cancel commands, never left to pile up.

The account is the seeded client `MARKET_MAKER_EMAIL`. Its open-order limit is its own:
room for two full ladders (one live, one being canceled), and at least the clients'
`MAX_OPEN_ORDERS`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.commands import PendingCommand, order_command, publish_commands, write_commands
from brokerx_core.db.base import utcnow
from brokerx_core.intake import (
    OPEN_SQL,
    InstrumentTerms,
    IntakeError,
    NewOrder,
    TradingRules,
    place_order,
)
from brokerx_core.intake.pretrade import price_band
from brokerx_core.money import floor_to_tick, from_ticks, to_ticks
from brokerx_core.observability.logging import get_logger
from brokerx_core.seed import MARKET_MAKER_EMAIL
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

CORRELATION_ID = "market-maker"
LOT = 100  # shares at the best level; each level further out holds one lot more
MOVE_PROBABILITY = 0.3  # chance per step that the reference moves one level up or down

_ACCOUNT = text(
    "SELECT a.id FROM client c JOIN account a ON a.client_id = c.id WHERE c.email = :email"
)
_INSTRUMENTS = text(
    "SELECT symbol, tick_size, reference_price, last_price, status FROM instrument"
    " WHERE status = 'active' ORDER BY symbol"
)
_OPEN_ORDERS = text(
    "SELECT id, symbol, side, limit_price, version FROM client_order"
    f" WHERE account_id = :account AND status IN {OPEN_SQL} ORDER BY intake_seq"
)

Level = tuple[str, int]  # (side, price in ticks)


@dataclass(slots=True)
class Ladder:
    """The moving reference of one symbol and the shape of its quotes, in ticks."""

    mid: int
    spread: int  # best ask - best bid
    step: int  # distance between two levels on one side

    def quotes(self, levels: int) -> dict[Level, int]:
        """Every wanted (side, price) with its quantity."""
        best_bid = self.mid - self.spread // 2
        best_ask = best_bid + self.spread
        wanted: dict[Level, int] = {}
        for i in range(levels):
            wanted[("buy", best_bid - i * self.step)] = LOT * (i + 1)
            wanted[("sell", best_ask + i * self.step)] = LOT * (i + 1)
        return wanted


@dataclass(frozen=True, slots=True)
class Quote:
    id: uuid.UUID
    symbol: str
    side: str
    price: Decimal
    version: int


@dataclass(slots=True)
class StepResult:
    placed: int = 0
    canceled: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class MarketMaker:
    """One market-making account quoting every instrument; `step()` is one round."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        settings: WorkerSettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._settings = settings
        self._rules = TradingRules.from_settings(settings)
        self._levels = max(settings.market_maker_levels, 0)
        self._spread_pct = Decimal(settings.market_maker_spread_pct)
        self._rng = rng or random.Random()
        self._account_id: uuid.UUID | None = None
        self._instruments = 0
        self.ladders: dict[str, Ladder] = {}
        # Quotes a cancel was sent for: not counted as live, not canceled twice.
        self.canceling: set[uuid.UUID] = set()

    def max_open_orders(self) -> int:
        """The market maker's own open-order limit: two full ladders per instrument."""
        return max(self._rules.max_open_orders, 4 * self._levels * self._instruments)

    async def account_id(self) -> uuid.UUID | None:
        """The market maker's account (looked up once; None until it is seeded)."""
        if self._account_id is None:
            async with self._sessionmaker() as session:
                found = await session.scalar(_ACCOUNT, {"email": MARKET_MAKER_EMAIL})
            self._account_id = found
        return self._account_id

    async def step(self) -> StepResult:
        """Move each reference, withdraw quotes off the ladder, add the missing ones."""
        result = StepResult()
        account_id = await self.account_id()
        if account_id is None:
            log.warning("market_maker_account_missing", email=MARKET_MAKER_EMAIL)
            return result
        async with self._sessionmaker() as session:
            instruments = [
                InstrumentTerms(r.symbol, r.tick_size, r.reference_price, r.last_price, r.status)
                for r in await session.execute(_INSTRUMENTS)
            ]
            quotes = [
                Quote(r.id, r.symbol, r.side, r.limit_price, r.version)
                for r in await session.execute(_OPEN_ORDERS, {"account": account_id})
            ]
        self._instruments = len(instruments)
        open_ids = {q.id for q in quotes}
        self.canceling &= open_ids  # the engine finished those
        budget = self.max_open_orders() - len(quotes)
        by_symbol: dict[str, list[Quote]] = {}
        for quote in quotes:
            by_symbol.setdefault(quote.symbol, []).append(quote)
        for instrument in instruments:
            budget -= await self._quote_symbol(
                account_id, instrument, by_symbol.get(instrument.symbol, []), budget, result
            )
        return result

    def _ladder(self, instrument: InstrumentTerms) -> Ladder:
        tick = instrument.tick_size
        reference = to_ticks(floor_to_tick(instrument.reference, tick), tick)
        ladder = self.ladders.get(instrument.symbol)
        if ladder is None:
            spread = int(
                (instrument.reference * self._spread_pct / 100 / tick).to_integral_value(
                    ROUND_CEILING
                )
            )
            spread = max(spread, 2)
            ladder = Ladder(mid=reference, spread=spread, step=max(spread // 2, 1))
            self.ladders[instrument.symbol] = ladder
        elif self._rng.random() < MOVE_PROBABILITY:
            ladder.mid += ladder.step if self._rng.random() < 0.5 else -ladder.step
        # Keep the reference within half the band of the engine's reference price.
        half_band = int(
            (Decimal(reference) * self._rules.price_band_pct / 200).to_integral_value(ROUND_FLOOR)
        )
        ladder.mid = min(max(ladder.mid, reference - half_band), reference + half_band)
        return ladder

    def _wanted(self, instrument: InstrumentTerms) -> dict[Level, int]:
        tick = instrument.tick_size
        low, high = price_band(instrument, self._rules)
        low_ticks, high_ticks = to_ticks(low, tick), to_ticks(high, tick)
        return {
            level: quantity
            for level, quantity in self._ladder(instrument).quotes(self._levels).items()
            if low_ticks <= level[1] <= high_ticks and level[1] > 0
        }

    async def _quote_symbol(
        self,
        account_id: uuid.UUID,
        instrument: InstrumentTerms,
        quotes: list[Quote],
        budget: int,
        result: StepResult,
    ) -> int:
        """Bring one symbol's quotes to its ladder; returns how many orders it opened."""
        tick = instrument.tick_size
        wanted = self._wanted(instrument)
        stale: list[Quote] = []
        for quote in quotes:
            if quote.id in self.canceling:
                continue
            level = (quote.side, to_ticks(quote.price, tick)) if quote.price % tick == 0 else None
            if level is not None and level in wanted:
                del wanted[level]  # already quoted: keep it (and its time priority)
            else:
                stale.append(quote)  # off the ladder, or a second order at one level
        if not stale and not wanted:
            return 0
        pending: list[PendingCommand] = []
        placed = 0
        async with self._sessionmaker() as session, session.begin():
            cancels = [
                order_command(
                    "cancel", q.id, q.symbol, q.version, ts=utcnow(), correlation_id=CORRELATION_ID
                )
                for q in stale
            ]
            pending.extend(await write_commands(session, cancels, shards=self._rules.shards))
            # Nearest levels (smallest lots) first: a short budget keeps the inside quotes.
            for (side, ticks), quantity in sorted(wanted.items(), key=lambda kv: kv[1]):
                if placed >= budget:
                    break
                order = NewOrder(
                    instrument.symbol, side, "limit", quantity, from_ticks(ticks, tick), "gtc"
                )
                try:
                    placement = await place_order(
                        session,
                        account_id=account_id,
                        order=order,
                        rules=self._rules,
                        correlation_id=CORRELATION_ID,
                        max_open_orders=self.max_open_orders(),
                    )
                except IntakeError as exc:  # refused before writing anything: go on
                    result.refused[exc.code] = result.refused.get(exc.code, 0) + 1
                    log.info("market_maker_quote_refused", symbol=order.symbol, code=exc.code)
                    continue
                assert placement.command is not None
                pending.append(placement.command)
                placed += 1
        await publish_commands(self._redis, pending)
        self.canceling.update(q.id for q in stale)
        result.canceled += len(stale)
        result.placed += placed
        return placed


async def market_maker(ctx: dict[str, Any]) -> None:
    """Background task: one market-making step every `market_maker_interval_seconds`."""
    settings: WorkerSettings = ctx["settings"]
    if not settings.market_maker_enabled:
        return
    maker = MarketMaker(ctx["sessionmaker"], ctx["streams"], settings)
    log.info("market_maker_started", levels=settings.market_maker_levels)
    while True:
        try:
            result = await maker.step()
            if result.placed or result.canceled:
                log.debug("market_maker_step", placed=result.placed, canceled=result.canceled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database or Redis outage must not end the loop
            raise_if_cancelled()  # unless the error was our cancel, lost by a library
            log.warning("market_maker_step_failed", error=str(exc), error_type=type(exc).__name__)
        await asyncio.sleep(settings.market_maker_interval_seconds)


FUNCTIONS: list[Any] = []
CRON_JOBS: list[Any] = []
BACKGROUND_TASKS: list[Any] = [market_maker]
