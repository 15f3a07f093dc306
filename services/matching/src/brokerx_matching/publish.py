"""The Redis side of a committed batch, in one command.

Execution reports (`executions`), one conflated market-data update per symbol
(`marketdata` plus the md:quote / md:book / md:trades read models), dead letters and the
XACK of the batch's entries all go in a single EVALSHA of the script below: one round
trip and one reply per batch, however many reports and symbols. Packing and parsing one
redis-py command per report cost more than matching the orders (docs/performance.md),
and the pipeline of a dozen commands that a small batch still needed for its market
data and XACK, plus the SCRIPT EXISTS that redis-py sends before a pipeline holding a
script, cost another round trip and more Python than the rest of publishing. The
script is atomic, so the entries are acknowledged exactly when their reports and market
data are out.

It goes over the shard's own connection (redis_link.py). The script is loaded on the
first NOSCRIPT reply (a Redis restart or flush is handled the same way); a NOSCRIPT reply
means nothing ran, so the retry cannot publish twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from brokerx_core.streams import (
    BOOK_KEY,
    DEAD_LETTER_STREAM,
    EXECUTIONS_STREAM,
    MARKETDATA_STREAM,
    MATCHING_GROUP,
    QUOTE_KEY,
    TRADES_KEY,
)
from brokerx_matching.marketdata import TRADES_KEPT, SymbolUpdate
from brokerx_matching.redis_link import Arg, RedisLink

# KEYS: executions, marketdata, the shard's orders stream, orders.dead, then for each
#       symbol its md:quote, md:book and md:trades keys.
# ARGV: marketdata maxlen, group, trades kept, then the counts of reports, symbols,
#       acks and dead letters; then the reports; for each symbol its update, quote,
#       book, number of trades and the trades (oldest first); the entry ids to
#       acknowledge; five fields per dead letter.
# `executions` is not trimmed here: a MAXLEN would drop reports a group has not
# acknowledged yet; the shard manager trims it below them (executions_stream.py).
# `unpack` is chunked: Lua's C stack takes a few thousand values at most.
_PUBLISH_BATCH = """
local i = 8
for _ = 1, tonumber(ARGV[4]) do
    redis.call('XADD', KEYS[1], '*', 'data', ARGV[i])
    i = i + 1
end
for s = 0, tonumber(ARGV[5]) - 1 do
    local k = 5 + 3 * s
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
    redis.call('SET', KEYS[k], ARGV[i + 1])
    redis.call('SET', KEYS[k + 1], ARGV[i + 2])
    local n = tonumber(ARGV[i + 3])
    i = i + 4
    if n > 0 then
        local last = i + n - 1
        for first = i, last, 500 do
            redis.call('LPUSH', KEYS[k + 2], unpack(ARGV, first, math.min(first + 499, last)))
        end
        redis.call('LTRIM', KEYS[k + 2], 0, tonumber(ARGV[3]) - 1)
        i = i + n
    end
end
local acks = tonumber(ARGV[6])
if acks > 0 then
    local last = i + acks - 1
    for first = i, last, 500 do
        redis.call('XACK', KEYS[3], ARGV[2], unpack(ARGV, first, math.min(first + 499, last)))
    end
    i = i + acks
end
for _ = 1, tonumber(ARGV[7]) do
    redis.call('XADD', KEYS[4], '*', 'data', ARGV[i], 'error', ARGV[i + 1],
        'stream', ARGV[i + 2], 'entry_id', ARGV[i + 3], 'deliveries', ARGV[i + 4])
    i = i + 5
end
return i - 8
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: bytes
    data: bytes
    error: str
    deliveries: int


class BatchPublisher:
    """Publishes committed batches of one shard's stream."""

    def __init__(self, link: RedisLink, stream: str, *, marketdata_maxlen: int) -> None:
        self.link = link
        self.stream = stream
        self.marketdata_maxlen = marketdata_maxlen
        self._sha = hashlib.sha1(_PUBLISH_BATCH.encode()).hexdigest()

    async def publish(
        self,
        reports: Sequence[bytes],
        updates: Sequence[SymbolUpdate],
        acks: Sequence[bytes],
        dead: Sequence[DeadLetter] = (),
    ) -> None:
        """One EVALSHA: reports, market data, dead letters, then the XACK."""
        keys: list[Arg] = [EXECUTIONS_STREAM, MARKETDATA_STREAM, self.stream, DEAD_LETTER_STREAM]
        args: list[Arg] = [
            self.marketdata_maxlen,
            MATCHING_GROUP,
            TRADES_KEPT,
            len(reports),
            len(updates),
            len(acks),
            len(dead),
            *reports,
        ]
        for update in updates:
            symbol = update.symbol
            keys += (
                QUOTE_KEY.format(symbol=symbol),
                BOOK_KEY.format(symbol=symbol),
                TRADES_KEY.format(symbol=symbol),
            )
            args += (update.update, update.quote, update.book, len(update.trades))
            args += update.trades
        args += acks
        for letter in dead:
            args += (
                letter.data,
                letter.error[:2000],
                self.stream,
                letter.entry_id,
                letter.deliveries,
            )
        try:
            await self.link.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.link.execute("SCRIPT", "LOAD", _PUBLISH_BATCH)
            await self.link.execute("EVALSHA", self._sha, len(keys), *keys, *args)
