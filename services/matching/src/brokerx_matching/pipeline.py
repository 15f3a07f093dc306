"""One batch, end to end: de-duplicate → load → apply → commit → publish → XACK.

The order is the contract's (docs/trading.md, "Per batch"): the PostgreSQL commit comes
before anything is published or acknowledged, so a crash at any point leaves either an
unacknowledged entry whose effects are not committed (it is applied again) or one whose
outbox row is gone (it is recognised and skipped) and whose execution reports wait in
the report outbox for the shard's next owner (report_outbox.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokerx_core.messages import OrderCommand
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import shard_of
from brokerx_matching import metrics
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.faults import after_commit
from brokerx_matching.marketdata import batch_updates
from brokerx_matching.persistence import commit_batch, load_batch_inputs
from brokerx_matching.publish import BatchPublisher, DeadLetter
from brokerx_matching.recovery import load_instrument
from brokerx_matching.redis_link import RedisLink
from brokerx_matching.report_outbox import ReportOutbox
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


def blames_commands(exc: BaseException) -> bool:
    """True when a failure may come from the commands themselves (poison accounting)."""
    return not isinstance(exc, TRANSIENT_ERRORS)


def now() -> datetime:
    return datetime.now(UTC)


class BatchRunner:
    """Runs batches of one shard on the shard's own connection."""

    def __init__(
        self,
        shard: int,
        stream: str,
        conn: Connection,
        link: RedisLink,
        settings: MatchingSettings,
        stop: asyncio.Event,
    ) -> None:
        self.shard = shard
        self.stream = stream
        self.conn = conn
        self.settings = settings
        self.stop = stop
        self.publisher = BatchPublisher(link, stream, marketdata_maxlen=settings.marketdata_maxlen)
        self.outbox = ReportOutbox(shard)
        self._exit_after_commit = settings.fault_exit_after_commit  # test hook

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
        if loaded is None:
            to_apply, loaded = await self._prepare(engine, commands)
        else:
            to_apply = list(commands)
        batch = engine.apply([c.command for c in to_apply], loaded, now())
        reports = await self.commit(batch)
        await self.publish(engine, batch, reports, acks, dead)
        engine.committed(batch)
        elapsed = time.perf_counter() - started
        metrics.BATCH_SECONDS.observe(elapsed)
        if acks:
            metrics.BATCH_SIZE.observe(len(acks))
        if batch.trades:
            metrics.TRADES.inc(len(batch.trades))
        outcomes: dict[tuple[str, str], int] = {}
        for key in batch.outcomes:
            outcomes[key] = outcomes.get(key, 0) + 1
        for (command_type, outcome), count in outcomes.items():
            metrics.COMMANDS.labels(command_type, outcome).inc(count)
        published = time.time()
        for created_at in batch.first_fills:
            metrics.INTAKE_TO_FILL.observe(max(0.0, published - created_at.timestamp()))
        return batch

    async def _prepare(
        self, engine: MatchingEngine, commands: Sequence[Command]
    ) -> tuple[list[Command], dict[Any, OrderState]]:
        """Drop the commands already applied (outbox row gone), repeated in the batch or
        sent to the wrong shard (counted), and load the rows of the orders the others
        name that do not rest in the books: one query for both."""
        outbox_ids = [c.command.outbox_id for c in commands if c.command.outbox_id is not None]
        needed = {c.command.order_id for c in commands if not engine.knows(c.command.order_id)}
        existing, loaded = await load_batch_inputs(self.conn, outbox_ids, needed)
        seen: set[int] = set()
        kept: list[Command] = []
        shards = self.settings.matching_shards
        for item in commands:
            command = item.command
            outbox_id = command.outbox_id
            if outbox_id is not None:
                if outbox_id not in existing or outbox_id in seen:
                    metrics.COMMANDS.labels(command.type, "duplicate").inc()
                    continue
                seen.add(outbox_id)
            if shard_of(command.symbol, shards) != self.shard:
                # Never touch another shard's book: its owner applies the order (recovery
                # picks pending_new orders up by symbol). Left in the outbox on purpose.
                log.error("command_misrouted", stream=self.stream, symbol=command.symbol)
                metrics.COMMANDS.labels(command.type, "misrouted").inc()
                continue
            kept.append(item)
        for order in loaded.values():
            symbol = order.symbol
            if symbol not in engine.instruments and shard_of(symbol, shards) == self.shard:
                instrument = await load_instrument(self.conn, symbol)  # listed since start
                if instrument is not None:
                    engine.add_instrument(instrument)
        return kept, loaded

    async def commit(self, batch: Batch) -> list[bytes]:
        """Commit the batch (nothing when it changed nothing) with its execution reports
        in the report outbox; returns the reports as they are published."""
        reports = [report_json(report) for report in batch.reports]
        if not batch.empty:
            inserted = await commit_batch(self.conn, batch, self.outbox.params(reports))
            self.outbox.committed(inserted)
            if self._exit_after_commit:
                after_commit(self._exit_after_commit)
        return reports

    async def publish(
        self,
        engine: MatchingEngine,
        batch: Batch,
        reports: Sequence[bytes],
        acks: Sequence[bytes],
        dead: Sequence[DeadLetter] = (),
    ) -> None:
        """XADD `reports` (the batch's, from `commit`), market data and dead letters,
        refresh md:*, then XACK.

        Runs after the commit, so a Redis outage is waited out rather than failing the
        batch (the books already agree with PostgreSQL). If the process dies meanwhile
        the entries are redelivered and skipped (their outbox rows are gone); the
        reports, committed in the report outbox, are republished by the shard's next
        owner (report_outbox.py).
        """
        if not (reports or batch.symbols or batch.trades or acks or dead):
            return
        updates = batch_updates(
            engine, batch.symbols, batch.trades, batch.ts, depth=self.settings.book_depth
        )
        delay = 0.1
        while True:
            try:
                await self.publisher.publish(reports, updates, acks, dead)
                break
            except REDIS_DOWN as exc:
                if self.stop.is_set():
                    raise
                log.warning("publish_retry", stream=self.stream, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.outbox.published()
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
