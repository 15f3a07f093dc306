"""Rebuilding a shard from PostgreSQL (the only source of truth).

On start and whenever a shard is acquired — and after any batch that failed to commit,
since the books may then be ahead of the database — the consumer rebuilds the shard's
engine from open orders in their persisted priority, then re-applies its `pending_new`
orders in intake order (see `consumer.ShardConsumer.recover`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from brokerx_core.messages import OrderCommand
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import shard_of
from brokerx_matching.batch_sql import ORDER_COLUMNS, ORDER_FROM
from brokerx_matching.book import OrderBookError
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.state import InstrumentState, OrderState, new_order_state

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection

_INSTRUMENTS = (
    "SELECT symbol, tick_size, reference_price, status, last_price, last_trade_at"
    " FROM instrument ORDER BY symbol"
)
_INSTRUMENT = f"{_INSTRUMENTS.split(' ORDER BY')[0]} WHERE symbol = $1"
# Open orders in the book, in time priority (the partial index on (symbol, priority_seq)).
_RESTING = (
    f"SELECT {ORDER_COLUMNS} {ORDER_FROM}"
    " WHERE o.symbol = ANY($1::text[]) AND o.status IN ('new', 'partially_filled')"
    " ORDER BY o.priority_seq"
)
_PENDING_NEW = (
    f"SELECT {ORDER_COLUMNS} {ORDER_FROM}"
    " WHERE o.symbol = ANY($1::text[]) AND o.status = 'pending_new'"
    " ORDER BY o.intake_seq"
)
# The outbox holds only unconsumed commands, so reading a stream's rows stays cheap.
_STREAM_OUTBOX = "SELECT id, payload FROM outbox WHERE stream = $1"
_RECENT_TRADES = """
SELECT s.symbol, t.price, t.quantity, t.created_at
FROM unnest($1::text[]) AS s(symbol)
CROSS JOIN LATERAL (
    SELECT price, quantity, created_at FROM trade
    WHERE trade.symbol = s.symbol ORDER BY seq DESC LIMIT $2
) AS t
"""

RecentTrades = dict[str, list[tuple[Decimal, int, datetime]]]


def _instrument(row: Any) -> InstrumentState:
    symbol, tick, reference, status, last_price, last_trade_at = row
    return InstrumentState(symbol, tick, reference, status, last_price, None, last_trade_at)


async def load_instruments(conn: Connection, shard: int, shards: int) -> list[InstrumentState]:
    """The instruments whose symbol hashes to `shard`."""
    rows = await conn.fetch(_INSTRUMENTS)
    return [_instrument(row) for row in rows if shard_of(row[0], shards) == shard]


async def load_instrument(conn: Connection, symbol: str) -> InstrumentState | None:
    """One instrument (one listed after the shard was built), or None."""
    row = await conn.fetchrow(_INSTRUMENT, symbol)
    return None if row is None else _instrument(row)


async def recent_trades(conn: Connection, symbols: list[str], limit: int) -> RecentTrades:
    """The last `limit` trades of each symbol, newest first."""
    result: RecentTrades = {symbol: [] for symbol in symbols}
    for symbol, price, quantity, created_at in await conn.fetch(_RECENT_TRADES, symbols, limit):
        result[symbol].append((price, quantity, created_at))
    return result


async def rebuild_engine(
    conn: Connection, shard: int, shards: int, *, market_collar_pct: Decimal
) -> MatchingEngine:
    """The shard's books as PostgreSQL has them: resting orders at their priority.

    Each book's sequence continues after the highest priority among its open orders
    (`add_resting` raises `next_seq` past every order it puts back).
    """
    instruments = await load_instruments(conn, shard, shards)
    engine = MatchingEngine(instruments, market_collar_pct=market_collar_pct)
    symbols = list(engine.instruments)
    if not symbols:
        return engine
    for symbol, trades in (await recent_trades(conn, symbols, 1)).items():
        if trades:
            engine.instruments[symbol].last_size = trades[0][1]
    rows = await conn.fetch(_RESTING, symbols)
    for row in rows:
        order = new_order_state(row)
        try:
            engine.add_resting(order)
        except (OrderBookError, AssertionError) as exc:
            # A persisted book that crosses (or a resting market order) is a bug; keep
            # serving the rest of the shard and say so loudly.
            log.error("resting_order_not_restored", order_id=str(order.id), error=repr(exc))
    return engine


async def pending_new_orders(
    conn: Connection, symbols: list[str], *, exclude: set[uuid.UUID] | None = None
) -> list[OrderState]:
    """Orders of these symbols still `pending_new`, in intake order."""
    if not symbols:
        return []
    rows = await conn.fetch(_PENDING_NEW, symbols)
    orders = [new_order_state(row) for row in rows]
    if exclude:
        orders = [order for order in orders if order.id not in exclude]
    return orders


async def pending_new_outbox(conn: Connection, stream: str) -> dict[uuid.UUID, int]:
    """Order id → outbox row of the `new_order` commands waiting on `stream`."""
    result: dict[uuid.UUID, int] = {}
    for outbox_id, payload in await conn.fetch(_STREAM_OUTBOX, stream):
        try:
            command = OrderCommand.model_validate_json(payload)
        except ValidationError:
            continue  # not a command: the relay dead-letters it, recovery ignores it
        if command.type == "new_order":
            result[command.order_id] = outbox_id
    return result
