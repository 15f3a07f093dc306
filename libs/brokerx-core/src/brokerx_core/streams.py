"""Stream names, consumer groups and the symbol → shard mapping shared by every service."""

from __future__ import annotations

import zlib

EXECUTIONS_STREAM = "executions"
MARKETDATA_STREAM = "marketdata"
DEAD_LETTER_STREAM = "orders.dead"
MATCHING_GROUP = "matching"
NOTIFIER_GROUP = "notifier"

# Redis keys kept by the engine for REST reads and snapshots.
QUOTE_KEY = "md:quote:{symbol}"
BOOK_KEY = "md:book:{symbol}"
TRADES_KEY = "md:trades:{symbol}"


def shard_of(symbol: str, shards: int) -> int:
    """Stable shard of a symbol: CRC32 (same in every process and Python version)."""
    return zlib.crc32(symbol.encode("utf-8")) % shards


def order_stream(shard: int) -> str:
    """Name of the command stream of a shard."""
    return f"orders.{shard}"


def order_stream_for(symbol: str, shards: int) -> str:
    """Name of the command stream that carries commands for `symbol`."""
    return order_stream(shard_of(symbol, shards))
