"""One batch, end to end: de-duplicate → load → apply → commit → publish → XACK.

The order is the contract's (docs/trading.md, "Per batch"): the PostgreSQL commit comes
before anything is published or acknowledged, so a crash at any point leaves either an
unacknowledged entry whose effects are not committed (it is applied again) or one whose
outbox row is gone (it is recognised and skipped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokerx_core.messages import OrderCommand
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import DEAD_LETTER_STREAM, EXECUTIONS_STREAM, MATCHING_GROUP, shard_of
from brokerx_matching import metrics
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.marketdata import queue_batch_updates
from brokerx_matching.persistence import commit_batch, existing_outbox_ids, load_orders
from brokerx_matching.recovery import load_instrument
from brokerx_matching.reports import report_json
from brokerx_matching.settings import MatchingSettings
from brokerx_matching.state import Batch, Command, OrderState

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection

# PostgreSQL errors that say nothing about the commands: retry the batch as it is.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InterfaceError,
    RedisError,  # only reachable after the commit: the entries are skipped on redelivery
    ConnectionError,
    OSError,
    TimeoutError,
)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

# XADDs the reports of a batch in one command: packing and parsing one XADD per report
# in redis-py cost more than matching the orders (see docs/performance.md).
_XADD_MANY = """
for i = 2, #ARGV do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'data', ARGV[i])
end
return #ARGV - 1
"""
_XADD_CHUNK = 1000


def blames_commands(exc: BaseException) -> bool:
    """True when a failure may come from the commands themselves (poison accounting)."""
    return not isinstance(exc, TRANSIENT_ERRORS)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry_id: bytes
    data: bytes
    error: str
    deliveries: int


def now() -> datetime:
    return datetime.now(UTC)


class BatchRunner:
    """Runs batches of one shard on the shard's own connection."""

    def __init__(
        self,
        shard: int,
        stream: str,
        conn: Connection,
        redis: Any,
        settings: MatchingSettings,
        stop: asyncio.Event,
    ) -> None:
        self.shard = shard
        self.stream = stream
        self.conn = conn
        self.redis = redis
        self.settings = settings
        self.stop = stop
        self._xadd_many = redis.register_script(_XADD_MANY)

    async def run(
        self,
        engine: MatchingEngine,
        commands: Sequence[Command],
        *,
        loaded: dict[Any, OrderState] | None = None,
        acks: Sequence[bytes] = (),
        dead: Sequence[DeadLetter] = (),
    ) -> Batch:
        """Apply, commit, publish and acknowledge. Raises if nothing could be committed."""
        started = time.perf_counter()
        to_apply = await self._deduplicate(commands) if loaded is None else list(commands)
        if loaded is None:
            loaded = await self._load(engine, to_apply)
        batch = engine.apply([c.command for c in to_apply], loaded, now())
        if not batch.empty:
            await commit_batch(self.conn, batch)
        await self.publish(engine, batch, acks, dead)
        engine.committed(batch)
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        if acks:
            metrics.BATCH_SIZE.observe(len(acks))
        if batch.trades:
            metrics.TRADES.inc(len(batch.trades))
        for command_type, outcome in batch.outcomes:
            metrics.COMMANDS.labels(command_type, outcome).inc()
        published = time.time()
        for created_at in batch.first_fills:
            metrics.INTAKE_TO_FILL.observe(max(0.0, published - created_at.timestamp()))
        return batch

    async def _deduplicate(self, commands: Sequence[Command]) -> list[Command]:
        """Drop commands already applied (outbox row gone), repeated in the batch, or
        sent to the wrong shard; count them."""
        outbox_ids = [c.command.outbox_id for c in commands if c.command.outbox_id is not None]
        existing = await existing_outbox_ids(self.conn, outbox_ids)
        seen: set[int] = set()
        kept: list[Command] = []
        for item in commands:
            command = item.command
            outbox_id = command.outbox_id
            if outbox_id is not None:
                if outbox_id not in existing or outbox_id in seen:
                    metrics.COMMANDS.labels(command.type, "duplicate").inc()
                    continue
                seen.add(outbox_id)
            if shard_of(command.symbol, self.settings.matching_shards) != self.shard:
                # Never touch another shard's book: its owner applies the order (recovery
                # picks pending_new orders up by symbol). Left in the outbox on purpose.
                log.error("command_misrouted", stream=self.stream, symbol=command.symbol)
                metrics.COMMANDS.labels(command.type, "misrouted").inc()
                continue
            kept.append(item)
        return kept

    async def _load(
        self, engine: MatchingEngine, commands: Sequence[Command]
    ) -> dict[Any, OrderState]:
        """Rows of the orders the commands name that do not rest in the books."""
        needed = {c.command.order_id for c in commands if not engine.knows(c.command.order_id)}
        loaded = await load_orders(self.conn, needed)
        for order in loaded.values():
            symbol = order.symbol
            shards = self.settings.matching_shards
            if symbol not in engine.instruments and shard_of(symbol, shards) == self.shard:
                instrument = await load_instrument(self.conn, symbol)  # listed since start
                if instrument is not None:
                    engine.add_instrument(instrument)
        return loaded

    async def publish(
        self,
        engine: MatchingEngine,
        batch: Batch,
        acks: Sequence[bytes],
        dead: Sequence[DeadLetter] = (),
    ) -> None:
        """XADD reports, market data and dead letters, refresh md:*, then XACK.

        Runs after the commit, so a Redis outage is waited out rather than failing the
        batch (the books already agree with PostgreSQL). If the process dies meanwhile
        the entries are redelivered and skipped (their outbox rows are gone), and these
        reports are lost: the contract's documented gap.
        """
        if not (batch.reports or batch.symbols or batch.trades or acks or dead):
            return
        settings = self.settings
        reports = [report_json(report) for report in batch.reports]
        delay = 0.1
        while True:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for start in range(0, len(reports), _XADD_CHUNK):
                        await self._xadd_many(
                            keys=[EXECUTIONS_STREAM],
                            args=[
                                settings.executions_maxlen,
                                *reports[start : start + _XADD_CHUNK],
                            ],
                            client=pipe,
                        )
                    queue_batch_updates(
                        pipe,
                        engine,
                        batch.symbols,
                        batch.trades,
                        batch.ts,
                        depth=settings.book_depth,
                        maxlen=settings.marketdata_maxlen,
                    )
                    for letter in dead:
                        pipe.xadd(
                            DEAD_LETTER_STREAM,
                            {
                                "data": letter.data,
                                "error": letter.error[:2000],
                                "stream": self.stream,
                                "entry_id": letter.entry_id,
                                "deliveries": letter.deliveries,
                            },
                        )
                    if acks:
                        pipe.xack(self.stream, MATCHING_GROUP, *acks)
                    await pipe.execute()
                break
            except REDIS_DOWN as exc:
                if self.stop.is_set():
                    raise
                log.warning("publish_retry", stream=self.stream, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if dead:
            metrics.DEAD_LETTERS.inc(len(dead))


def recovery_command(order: OrderState, outbox_id: int | None, ts: datetime) -> Command:
    """A `new_order` for a `pending_new` order found by recovery (no stream entry)."""
    command = OrderCommand.model_construct(
        v=1,
        type="new_order",
        order_id=order.id,
        symbol=order.symbol,
        version=order.version,
        correlation_id=order.correlation_id,
        outbox_id=outbox_id,
        new_quantity=None,
        new_limit_price=None,
        new_time_in_force=None,
        ts=ts,
    )
    return Command(command)
