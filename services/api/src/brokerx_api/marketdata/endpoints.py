"""Instruments and market data: public, no authentication (API.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from brokerx_api.deps import RedisDep
from brokerx_api.marketdata.schemas import (
    BookOut,
    InstrumentList,
    InstrumentOut,
    QuoteOut,
    TradeList,
)
from brokerx_api.marketdata.service import (
    TRADES_KEPT,
    InstrumentCache,
    instrument_cache,
    read_book,
    read_quote,
    read_trades,
)

router = APIRouter(tags=["market data"])

CacheDep = Annotated[InstrumentCache, Depends(instrument_cache)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown symbol (`unknown_symbol`)"}
}


@router.get("/instruments", response_model=InstrumentList)
async def get_instruments(cache: CacheDep) -> InstrumentList:
    """Every listed instrument with its tick size, reference price, last trade price and
    trading status (`active` or `halted`)."""
    return InstrumentList(items=[i.to_schema() for i in await cache.all()])


@router.get("/instruments/{symbol}", response_model=InstrumentOut, responses=_NOT_FOUND)
async def get_instrument(symbol: str, cache: CacheDep) -> InstrumentOut:
    """One instrument. The symbol is case-insensitive (`aapl` finds `AAPL`)."""
    return (await cache.get(symbol)).to_schema()


@router.get("/marketdata/{symbol}/quote", response_model=QuoteOut, responses=_NOT_FOUND)
async def get_quote(symbol: str, cache: CacheDep, redis: RedisDep) -> QuoteOut:
    """Best bid and ask with their sizes, and the last trade. Sides with no resting order
    are null; before the first published quote `last` is the instrument's last price."""
    return await read_quote(redis, await cache.get(symbol))


@router.get("/marketdata/{symbol}/book", response_model=BookOut, responses=_NOT_FOUND)
async def get_book(
    symbol: str,
    cache: CacheDep,
    redis: RedisDep,
    depth: Annotated[int, Query(ge=1, le=50, description="Levels per side")] = 10,
) -> BookOut:
    """Aggregated order book, best price first: `[[price, quantity], ...]` per side, at
    most `depth` levels (the engine publishes its top `BOOK_DEPTH` levels, 10 by default)."""
    return await read_book(redis, await cache.get(symbol), depth)


@router.get("/marketdata/{symbol}/trades", response_model=TradeList, responses=_NOT_FOUND)
async def get_trades(
    symbol: str,
    cache: CacheDep,
    redis: RedisDep,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many trades")] = 50,
) -> TradeList:
    """Recent public trades, newest first (`{price, quantity, ts}`; the last 100 are
    kept, so `next_cursor` is always null)."""
    trades = await read_trades(redis, await cache.get(symbol), min(limit, TRADES_KEPT))
    return TradeList(items=trades)
