"""Market data: one conflated update per symbol per batch, and the Redis read models.

`md:quote:<SYMBOL>`, `md:book:<SYMBOL>` (JSON) and `md:trades:<SYMBOL>` (a list, newest
first, 100 kept) are written after each batch commit and rewritten in full after a shard
is (re)built, so a Redis flush heals as soon as the shard recovers (docs/trading.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.messages import BookLevel, MarketDataUpdate, PublicTrade
from brokerx_core.money import fmt, from_ticks
from brokerx_core.streams import BOOK_KEY, MARKETDATA_STREAM, QUOTE_KEY, TRADES_KEY
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.state import TradeRecord

TRADES_KEPT = 100


def _levels(levels: Sequence[tuple[int, int]], tick: Decimal) -> list[tuple[Decimal, int]]:
    return [(from_ticks(price, tick), quantity) for price, quantity in levels]


def snapshot(
    engine: MatchingEngine, symbol: str, ts: datetime, depth: int, trades: Sequence[PublicTrade]
) -> tuple[MarketDataUpdate, str, str]:
    """The update to stream and the quote and book JSON of one symbol as it stands now."""
    instrument = engine.instruments[symbol]
    tick = instrument.tick_size
    book_depth = engine.books[symbol].depth(depth)
    bids = _levels(book_depth.bids, tick)
    asks = _levels(book_depth.asks, tick)
    bid, bid_size = bids[0] if bids else (None, None)
    ask, ask_size = asks[0] if asks else (None, None)
    update = MarketDataUpdate.model_construct(
        v=1,
        symbol=symbol,
        bid=bid,
        bid_size=bid_size,
        ask=ask,
        ask_size=ask_size,
        last=instrument.last_price,
        last_size=instrument.last_size,
        bids=[BookLevel.model_construct(price=p, quantity=q) for p, q in bids],
        asks=[BookLevel.model_construct(price=p, quantity=q) for p, q in asks],
        trades=list(trades),
        ts=ts,
    )
    stamp = ts.isoformat()
    quote = {
        "symbol": symbol,
        "bid": fmt(bid),
        "bid_size": bid_size,
        "ask": fmt(ask),
        "ask_size": ask_size,
        "last": fmt(instrument.last_price),
        "last_size": instrument.last_size,
        "ts": stamp,
    }
    book = {
        "symbol": symbol,
        "bids": [[fmt(p), q] for p, q in bids],
        "asks": [[fmt(p), q] for p, q in asks],
        "ts": stamp,
    }
    return update, json.dumps(quote), json.dumps(book)


def trade_json(price: Decimal, quantity: int, ts: datetime) -> str:
    """One entry of `md:trades:<SYMBOL>`."""
    return json.dumps({"price": fmt(price), "quantity": quantity, "ts": ts.isoformat()})


def queue_batch_updates(
    pipe: Any,
    engine: MatchingEngine,
    symbols: Iterable[str],
    trades: Sequence[TradeRecord],
    ts: datetime,
    *,
    depth: int,
    maxlen: int,
) -> int:
    """Queue on a pipeline the market data of a committed batch; returns updates queued."""
    by_symbol: dict[str, list[TradeRecord]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade)
    count = 0
    for symbol in sorted(set(symbols) | set(by_symbol)):
        symbol_trades = by_symbol.get(symbol, [])
        public = [
            PublicTrade.model_construct(price=t.price, quantity=t.quantity, ts=ts)
            for t in symbol_trades
        ]
        update, quote, book = snapshot(engine, symbol, ts, depth, public)
        pipe.xadd(
            MARKETDATA_STREAM, {"data": update.model_dump_json()}, maxlen=maxlen, approximate=True
        )
        pipe.set(QUOTE_KEY.format(symbol=symbol), quote)
        pipe.set(BOOK_KEY.format(symbol=symbol), book)
        if symbol_trades:
            key = TRADES_KEY.format(symbol=symbol)
            # LPUSH in trade order leaves the newest first.
            pipe.lpush(key, *(trade_json(t.price, t.quantity, ts) for t in symbol_trades))
            pipe.ltrim(key, 0, TRADES_KEPT - 1)
        count += 1
    return count


async def rewrite_read_models(
    redis: Any,
    engine: MatchingEngine,
    recent_trades: dict[str, list[tuple[Decimal, int, datetime]]],
    ts: datetime,
    *,
    depth: int,
) -> None:
    """Rewrite every md:* key of the shard's symbols (`recent_trades` newest first)."""
    async with redis.pipeline(transaction=False) as pipe:
        for symbol in engine.instruments:
            _update, quote, book = snapshot(engine, symbol, ts, depth, ())
            pipe.set(QUOTE_KEY.format(symbol=symbol), quote)
            pipe.set(BOOK_KEY.format(symbol=symbol), book)
            key = TRADES_KEY.format(symbol=symbol)
            pipe.delete(key)
            entries = recent_trades.get(symbol, [])[:TRADES_KEPT]
            if entries:
                pipe.rpush(key, *(trade_json(p, q, t) for p, q, t in entries))
        await pipe.execute()
