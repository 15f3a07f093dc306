"""Market data: one conflated update per symbol per batch, and the Redis read models.

`md:quote:<SYMBOL>`, `md:book:<SYMBOL>` (JSON) and `md:trades:<SYMBOL>` (a list, newest
first, 100 kept) are written after each batch commit and rewritten in full after a shard
is (re)built, so a Redis flush heals as soon as the shard recovers (docs/trading.md).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from brokerx_core.money import fmt, from_ticks
from brokerx_core.streams import BOOK_KEY, QUOTE_KEY, TRADES_KEY
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.state import TradeRecord

TRADES_KEPT = 100


@dataclass(frozen=True, slots=True)
class SymbolUpdate:
    """What one batch publishes for one symbol (see `publish.py`)."""

    symbol: str
    update: bytes  # `MarketDataUpdate` JSON, the `marketdata` entry
    quote: str  # md:quote:<SYMBOL>
    book: str  # md:book:<SYMBOL>
    trades: list[str]  # md:trades:<SYMBOL> entries of this batch, oldest first


@functools.lru_cache(maxsize=65_536)
def _price_text(ticks: int, tick: Decimal) -> str:
    """A level's price as its JSON text; the same few hundred levels come back in every
    snapshot, so they are formatted once."""
    return format(from_ticks(ticks, tick), "f")


def _levels(levels: Sequence[tuple[int, int]], tick: Decimal) -> list[tuple[str, int]]:
    return [(_price_text(price, tick), quantity) for price, quantity in levels]


def snapshot(
    engine: MatchingEngine,
    symbol: str,
    ts: datetime,
    depth: int,
    trades: Sequence[TradeRecord] = (),
) -> tuple[bytes, str, str]:
    """The update to stream and the quote and book JSON of one symbol as it stands now.

    The update is the JSON `MarketDataUpdate.model_dump_json()` writes, built as a dict
    and serialized by orjson: building the model per symbol per batch cost more than
    the rest of the market data (`tests/unit/test_engine_reports.py` compares them).
    """
    instrument = engine.instruments[symbol]
    tick = instrument.tick_size
    book_depth = engine.books[symbol].depth(depth)
    bids = _levels(book_depth.bids, tick)
    asks = _levels(book_depth.asks, tick)
    bid, bid_size = bids[0] if bids else (None, None)
    ask, ask_size = asks[0] if asks else (None, None)
    last = fmt(instrument.last_price)
    update = {
        "v": 1,
        "symbol": symbol,
        "bid": bid,
        "bid_size": bid_size,
        "ask": ask,
        "ask_size": ask_size,
        "last": last,
        "last_size": instrument.last_size,
        "bids": [{"price": p, "quantity": q} for p, q in bids],
        "asks": [{"price": p, "quantity": q} for p, q in asks],
        "trades": [{"price": fmt(t.price), "quantity": t.quantity, "ts": ts} for t in trades],
        "ts": ts,
    }
    stamp = ts.isoformat()
    quote = {
        "symbol": symbol,
        "bid": bid,
        "bid_size": bid_size,
        "ask": ask,
        "ask_size": ask_size,
        "last": last,
        "last_size": instrument.last_size,
        "ts": stamp,
    }
    book = {
        "symbol": symbol,
        "bids": [[p, q] for p, q in bids],
        "asks": [[p, q] for p, q in asks],
        "ts": stamp,
    }
    return (
        orjson.dumps(update, option=orjson.OPT_UTC_Z),
        json.dumps(quote),
        json.dumps(book),
    )


def trade_json(price: Decimal, quantity: int, ts: datetime) -> str:
    """One entry of `md:trades:<SYMBOL>`."""
    return json.dumps({"price": fmt(price), "quantity": quantity, "ts": ts.isoformat()})


def batch_updates(
    engine: MatchingEngine,
    symbols: Iterable[str],
    trades: Sequence[TradeRecord],
    ts: datetime,
    *,
    depth: int,
) -> list[SymbolUpdate]:
    """The market data of a committed batch: one conflated update per symbol whose book
    changed or that traded, whatever the number of orders in the batch."""
    by_symbol: dict[str, list[TradeRecord]] = {}
    for trade in trades:
        by_symbol.setdefault(trade.symbol, []).append(trade)
    updates = []
    for symbol in sorted(set(symbols) | set(by_symbol)):
        symbol_trades = by_symbol.get(symbol, [])
        update, quote, book = snapshot(engine, symbol, ts, depth, symbol_trades)
        entries = [trade_json(t.price, t.quantity, ts) for t in symbol_trades]
        updates.append(SymbolUpdate(symbol, update, quote, book, entries))
    return updates


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
            _update, quote, book = snapshot(engine, symbol, ts, depth)
            pipe.set(QUOTE_KEY.format(symbol=symbol), quote)
            pipe.set(BOOK_KEY.format(symbol=symbol), book)
            key = TRADES_KEY.format(symbol=symbol)
            pipe.delete(key)
            entries = recent_trades.get(symbol, [])[:TRADES_KEPT]
            if entries:
                pipe.rpush(key, *(trade_json(p, q, t) for p, q, t in entries))
        await pipe.execute()
