"""Instruments (cached briefly in memory) and the engine's market-data read models in Redis.

The matching service owns `md:quote:<SYMBOL>`, `md:book:<SYMBOL>` and `md:trades:<SYMBOL>`
(docs/trading.md, "Read models in Redis"); the api only reads them. A missing key is not
an error: Redis may have been flushed, or nothing has traded yet, so readers fall back to
an empty quote/book carrying the instrument's persisted last price.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from brokerx_api.errors import DomainError, ServiceUnavailable
from brokerx_api.marketdata.repository import list_instruments
from brokerx_api.marketdata.schemas import (
    BookOut,
    InstrumentOut,
    PublicTradeOut,
    QuoteOut,
    display_price,
)
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import BOOK_KEY, QUOTE_KEY, TRADES_KEY

log = get_logger(__name__)

# Instruments change rarely (listing, halt) but `last_price` moves with every trade: one
# second keeps the database out of hot quote/subscribe paths without showing stale prices
# for long.
INSTRUMENT_CACHE_SECONDS = 1.0
# The engine trims `md:trades:<SYMBOL>` to this many entries.
TRADES_KEPT = 100


class UnknownSymbol(DomainError):
    status, code, title = 404, "unknown_symbol", "Unknown symbol"


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """An immutable copy of an instrument row, safe to share between requests."""

    symbol: str
    name: str
    tick_size: Decimal
    reference_price: Decimal
    last_price: Decimal | None
    last_trade_at: datetime | None
    status: str

    def to_schema(self) -> InstrumentOut:
        return InstrumentOut(
            symbol=self.symbol,
            name=self.name,
            tick_size=display_price(self.tick_size) or "",
            reference_price=display_price(self.reference_price) or "",
            last_price=display_price(self.last_price),
            status=self.status,
        )


class InstrumentCache:
    """The instrument list, reloaded from PostgreSQL at most once per `ttl` seconds.

    Concurrent callers that find it stale share one reload.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        ttl: float = INSTRUMENT_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._ttl = ttl
        self._clock = clock
        self._by_symbol: dict[str, InstrumentInfo] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at < self._ttl

    async def _load(self) -> None:
        async with self._lock:
            if self._fresh():
                return
            async with self._sessionmaker() as session:
                rows = await list_instruments(session)
            self._by_symbol = {
                row.symbol: InstrumentInfo(
                    symbol=row.symbol,
                    name=row.name,
                    tick_size=row.tick_size,
                    reference_price=row.reference_price,
                    last_price=row.last_price,
                    last_trade_at=row.last_trade_at,
                    status=row.status,
                )
                for row in rows
            }
            self._loaded_at = self._clock()

    async def all(self) -> list[InstrumentInfo]:
        """Every instrument, by symbol."""
        if not self._fresh():
            await self._load()
        return [self._by_symbol[s] for s in sorted(self._by_symbol)]

    async def find(self, symbol: str) -> InstrumentInfo | None:
        """The instrument for `symbol` (case-insensitive), or None."""
        if not self._fresh():
            await self._load()
        return self._by_symbol.get(symbol.strip().upper())

    async def get(self, symbol: str) -> InstrumentInfo:
        """The instrument for `symbol` (case-insensitive), or `UnknownSymbol`."""
        instrument = await self.find(symbol)
        if instrument is None:
            raise UnknownSymbol(f"No instrument with symbol {symbol[:20]!r}")
        return instrument


def instrument_cache(connection: HTTPConnection) -> InstrumentCache:
    """The app's instrument cache (one per app, created on first use; HTTP and WebSocket)."""
    state = connection.app.state
    cache: InstrumentCache | None = getattr(state, "instrument_cache", None)
    if cache is None:
        cache = InstrumentCache(state.sessionmaker)
        state.instrument_cache = cache
    return cache


def empty_quote(instrument: InstrumentInfo) -> QuoteOut:
    """The quote of a symbol the engine has published nothing for (yet, or since a flush)."""
    return QuoteOut(
        symbol=instrument.symbol,
        last=display_price(instrument.last_price),
        ts=instrument.last_trade_at,
    )


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    log.warning("marketdata_redis_unavailable", error=str(exc))
    return ServiceUnavailable(
        "Market data is temporarily unavailable", headers={"Retry-After": "1"}
    )


async def read_quote(redis: Redis, instrument: InstrumentInfo) -> QuoteOut:
    """The engine's current quote for the instrument, or an empty one."""
    try:
        raw = await redis.get(QUOTE_KEY.format(symbol=instrument.symbol))
    except RedisError as exc:
        raise _unavailable(exc) from exc
    if raw is None:
        return empty_quote(instrument)
    try:
        quote = QuoteOut.model_validate_json(raw)
    except ValidationError:
        # A read model we cannot parse is treated as missing: the engine rewrites it.
        log.warning("marketdata_bad_quote", symbol=instrument.symbol)
        return empty_quote(instrument)
    return quote.model_copy(update={"symbol": instrument.symbol})


async def read_book(redis: Redis, instrument: InstrumentInfo, depth: int) -> BookOut:
    """The engine's top-of-book levels (at most `depth` per side), or an empty book."""
    try:
        raw = await redis.get(BOOK_KEY.format(symbol=instrument.symbol))
    except RedisError as exc:
        raise _unavailable(exc) from exc
    book = BookOut(symbol=instrument.symbol)
    if raw is not None:
        try:
            book = BookOut.model_validate_json(raw)
        except ValidationError:
            log.warning("marketdata_bad_book", symbol=instrument.symbol)
    return BookOut(
        symbol=instrument.symbol, bids=book.bids[:depth], asks=book.asks[:depth], ts=book.ts
    )


async def read_trades(redis: Redis, instrument: InstrumentInfo, limit: int) -> list[PublicTradeOut]:
    """The most recent public trades of the instrument, newest first."""
    try:
        raws: list[bytes] = await redis.lrange(  # type: ignore[misc]
            TRADES_KEY.format(symbol=instrument.symbol), 0, limit - 1
        )
    except RedisError as exc:
        raise _unavailable(exc) from exc
    trades: list[PublicTradeOut] = []
    for raw in raws:
        try:
            trades.append(PublicTradeOut.model_validate_json(raw))
        except ValidationError:
            log.warning("marketdata_bad_trade", symbol=instrument.symbol)
    return trades
