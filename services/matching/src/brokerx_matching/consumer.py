"""The consumer of one shard: recovery, then the XREADGROUP loop (the Redis side of
the stream is in shard_stream.py, a batch end to end in pipeline.py).

Runs only while this process holds the shard's advisory lock, on the connection that
holds it (`shards.ShardManager`). Any batch that fails to commit throws the engine away
and recovers the shard from PostgreSQL (the books may be ahead of the database); the
failed entries are then claimed again, which counts a delivery, so a command that keeps
failing reaches `max_deliveries` and is dead-lettered while the shard moves on. After a
failure that may be the commands' fault, pending entries are retried one per batch so
the innocent ones go through and the guilty one is isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from pydantic import ValidationError

from brokerx_core.messages import OrderCommand, decode_command
from brokerx_core.observability.logging import get_logger
from brokerx_core.redis import SOCKET_TIMEOUT_SECONDS
from brokerx_core.streams import order_stream
from brokerx_matching import metrics
from brokerx_matching.engine import CommandFailed, MatchingEngine
from brokerx_matching.marketdata import TRADES_KEPT, rewrite_read_models
from brokerx_matching.pacing import Pacer
from brokerx_matching.persistence import existing_outbox_ids, load_orders
from brokerx_matching.pipeline import (
    REDIS_DOWN,
    BatchRunner,
    blames_commands,
    now,
    recovery_command,
)
from brokerx_matching.poison import bury
from brokerx_matching.publish import DeadLetter
from brokerx_matching.recovery import (
    pending_new_orders,
    pending_new_outbox,
    rebuild_engine,
    recent_trades,
)
from brokerx_matching.redis_link import RedisLink
from brokerx_matching.report_outbox import ORPHANS_OWNER, republish_orphans
from brokerx_matching.settings import MatchingSettings
from brokerx_matching.shard_stream import Cursor, Entry, RecoveryNeeded, ShardStream, at_end
from brokerx_matching.state import Command, OrderState

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection
_LOST = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


class ShardLost(Exception):
    """The connection holding the shard's lock is gone: another process may own it now."""


class SystemicFailure(Exception):
    """Command after command fails on its own: the fault is the engine's (a bad deploy, a
    schema drift), not the commands'. Retiring them all would reject every order, so the
    shard stops retiring and retries with back-off until something goes through."""


class ShardConsumer:
    def __init__(
        self,
        shard: int,
        conn: Connection,
        redis: Any,
        settings: MatchingSettings,
        stop: asyncio.Event,
        *,
        rebuilding: asyncio.Lock | None = None,
    ) -> None:
        self.shard = shard
        self.stream = order_stream(shard)
        self.conn = conn
        self.redis = redis
        self.settings = settings
        self.stop = stop
        # The batch's own commands (XREADGROUP, the publish script) on a connection of
        # its own; the rest on the shared client.
        self.link = RedisLink(settings.redis_url, timeout=SOCKET_TIMEOUT_SECONDS)
        self.entries = ShardStream(self.stream, redis, self.link, settings)
        self.runner = BatchRunner(shard, self.stream, conn, self.link, settings, stop)
        self.engine: MatchingEngine | None = None
        self.recovered = asyncio.Event()  # set once the shard serves (tests, benchmarks)
        self._errors: dict[bytes, str] = {}  # last failure of each entry still pending
        self._isolate = False
        self._quarantined: set[uuid.UUID] = set()
        self._next_housekeeping = 0.0
        self._rebuilding = rebuilding or asyncio.Lock()
        self._retired_in_a_row = 0  # see SystemicFailure

    # ----------------------------------------------------------------- loop

    async def run(self) -> None:
        """Serve the shard until `stop`; raises `ShardLost` when the lock is gone."""
        try:
            await self._serve()
            # Stopping: the last batch's published reports leave the report outbox, so
            # the next owner has nothing to send again.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.runner.outbox.probe(self.conn), 2.0)
        finally:
            self.link.close()

    async def _serve(self) -> None:
        delay = 0.1
        while not self.stop.is_set():
            try:
                await self.recover()
                delay = 0.1
                await self._consume()
            except RecoveryNeeded:
                log.warning("shard_stream_missing", stream=self.stream)
            except SystemicFailure as exc:
                log.error("shard_halted", stream=self.stream, error=str(exc))
                metrics.COMMANDS.labels("any", "halted").inc()
                await self._sleep(delay)
                delay = min(max(delay, 1.0) * 2, 30.0)
            except Exception as exc:
                if self.conn.is_closed() or isinstance(exc, _LOST):
                    raise ShardLost(self.shard) from exc
                log.warning("shard_failed", stream=self.stream, error=repr(exc))
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self) -> None:
        settings = self.settings
        pacer = Pacer(settings.min_batch_interval_ms / 1000, settings.batch_size)
        next_read = 0.0
        delay = 0.1
        while not self.stop.is_set():
            wait = next_read - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing.py
            try:
                entries = await self.entries.read_new()
                delay = 0.1
            except REDIS_DOWN as exc:
                log.warning("redis_unavailable", stream=self.stream, error=str(exc))
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            next_read = pacer.next_read(time.monotonic(), len(entries))
            if entries:
                await self._process(entries, claimed=False)
            else:
                # Idle: make sure we still hold the lock (a dead connection = lost shard);
                # the round trip deletes the last batch's published reports, if any.
                await self.runner.outbox.probe(self.conn)
            if time.monotonic() >= self._next_housekeeping:
                await self._housekeeping()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    # ------------------------------------------------------------- recovery

    async def recover(self) -> None:
        """Republish the reports left in the report outbox (shard 0: also those of the
        shards >= MATCHING_SHARDS), rebuild the books, re-apply pending_new orders,
        rewrite md:*, then drain the group's pending entries (docs/trading.md,
        "Recovery")."""
        started = time.perf_counter()
        self.engine = None
        republished = await self.runner.outbox.republish(self.conn, self.runner.publisher)
        if republished:
            log.warning("reports_republished", stream=self.stream, reports=republished)
        if self.shard == ORPHANS_OWNER:
            shards = self.settings.matching_shards
            orphans = await republish_orphans(self.conn, self.runner.publisher, shards)
            if orphans:
                log.warning("orphan_reports_republished", shards=shards, reports=orphans)
        await self.entries.ensure_group()
        self.engine = await self._rebuild()
        await self._apply_pending_new()
        symbols = list(self.engine.instruments)
        recent = await recent_trades(self.conn, symbols, TRADES_KEPT)
        await rewrite_read_models(
            self.redis, self.engine, recent, now(), depth=self.settings.book_depth
        )
        elapsed = time.perf_counter() - started
        metrics.RECOVERY_SECONDS.observe(elapsed)
        log.info(
            "shard_recovered",
            stream=self.stream,
            resting=len(self.engine.orders),
            seconds=round(elapsed, 3),
        )
        await self._drain_pending()
        self.recovered.set()

    async def _rebuild(self) -> MatchingEngine:
        async with self._rebuilding:
            return await rebuild_engine(
                self.conn,
                self.shard,
                self.settings.matching_shards,
                market_collar_pct=self.settings.market_collar_pct,
            )

    async def _apply_pending_new(self) -> None:
        """Every order of the shard still `pending_new`, as `new_order`, in intake order."""
        assert self.engine is not None
        symbols = list(self.engine.instruments)
        orders = await pending_new_orders(self.conn, symbols, exclude=self._quarantined)
        if not orders:
            return
        outbox = await pending_new_outbox(self.conn, self.stream)
        size = self.settings.batch_size
        for start in range(0, len(orders), size):
            chunk = orders[start : start + size]
            commands = [recovery_command(o, outbox.get(o.id), now()) for o in chunk]
            try:
                await self.runner.run(self.engine, commands, loaded={o.id: o for o in chunk})
            except Exception as exc:
                if self.conn.is_closed() or not blames_commands(exc):
                    raise
                log.warning("pending_new_batch_failed", stream=self.stream, error=repr(exc))
                await self._apply_one_by_one([o.id for o in chunk], outbox)
            else:
                self._retired_in_a_row = 0
        log.info("pending_new_applied", stream=self.stream, orders=len(orders))

    async def _apply_one_by_one(self, order_ids: list[uuid.UUID], outbox: dict[Any, int]) -> None:
        """Isolate the order(s) that made a recovery batch fail; reject them."""
        dirty = True
        for order_id in order_ids:
            if dirty:
                self.engine = await self._rebuild()
                dirty = False
            fresh = await load_orders(self.conn, [order_id])
            order = fresh.get(order_id)
            if order is None or order.status != "pending_new":
                continue
            command = recovery_command(order, outbox.get(order_id), now())
            assert self.engine is not None
            try:
                await self.runner.run(self.engine, [command], loaded=fresh)
            except Exception as exc:
                if self.conn.is_closed() or not blames_commands(exc):
                    raise
                dirty = True
                await self._bury(command.command, repr(exc))
            else:
                self._retired_in_a_row = 0
        if dirty:
            self.engine = await self._rebuild()

    async def _drain_pending(self) -> None:
        """Claim every pending entry of the group (dead consumers' and our own) and
        apply them before new ones; one per batch after a failure (isolation)."""
        cursor: Cursor = "0-0"
        while not self.stop.is_set():
            count = 1 if self._isolate else self.settings.batch_size
            if self._halted:
                cursor, entries = await self.entries.claim_without_counting(cursor, count)
            else:
                cursor, entries = await self.entries.claim(cursor, count)
            if entries:
                await self._process(entries, claimed=True)
            if at_end(cursor):
                break
        self._isolate = False

    # -------------------------------------------------------------- batches

    async def _process(self, entries: Sequence[Entry], *, claimed: bool) -> None:
        assert self.engine is not None
        limit = self.settings.max_deliveries
        deliveries = await self.entries.deliveries(entries) if claimed else {}
        commands: list[Command] = []
        acks: list[bytes] = []
        dead: list[DeadLetter] = []
        for entry_id, fields in entries:
            acks.append(entry_id)
            raw = (fields or {}).get(b"data", b"")
            count = deliveries.get(entry_id, 1)
            try:
                command = decode_command(fields or {})
            except ValidationError as exc:
                dead.append(DeadLetter(entry_id, raw, f"undecodable: {exc}", count))
                metrics.COMMANDS.labels("undecodable", "dead_letter").inc()
                continue
            if count > limit and not self._halted:
                error = self._errors.pop(entry_id, f"delivered {count} times, never applied")
                await self._bury(command, error)
                dead.append(DeadLetter(entry_id, raw, error, count))
                metrics.COMMANDS.labels(command.type, "dead_letter").inc()
                continue
            # Halted: a command past its deliveries is tried again, not retired.
            commands.append(Command(command, entry_id))
        try:
            await self.runner.run(self.engine, commands, acks=acks, dead=dead)
        except Exception as exc:
            if blames_commands(exc):
                self._isolate = True
                error = repr(exc.cause if isinstance(exc, CommandFailed) else exc)
                for item in commands:
                    if not isinstance(exc, CommandFailed) or item.command is exc.command:
                        assert item.entry_id is not None
                        self._errors[item.entry_id] = error
                if self._halted:
                    raise SystemicFailure(f"still failing: {error}") from exc
            raise
        for item in commands:
            if item.entry_id is not None:
                self._errors.pop(item.entry_id, None)
        if commands:
            self._retired_in_a_row = 0

    @property
    def _halted(self) -> bool:
        return self._retired_in_a_row >= self.settings.poison_streak_limit

    async def _bury(self, command: OrderCommand, error: str) -> None:
        """Retire a poison command in its own transaction (see `poison.bury`)."""
        if self._halted:
            raise SystemicFailure(
                f"{self._retired_in_a_row} commands in a row failed on their own; now"
                f" {command.type} {command.order_id}: {error}"
            )
        if command.outbox_id is not None:
            if not await existing_outbox_ids(self.conn, [command.outbox_id]):
                return
        order: OrderState | None = (await load_orders(self.conn, [command.order_id])).get(
            command.order_id
        )
        batch = bury(command, order, now())
        try:
            reports = await self.runner.commit(batch)
        except Exception as exc:
            if self.conn.is_closed() or not blames_commands(exc):
                raise
            # Even rejecting fails (the order's row is inconsistent): leave it alone,
            # stop retrying it in this process, and say so.
            self._quarantined.add(command.order_id)
            log.error("poison_not_retired", order_id=str(command.order_id), error=repr(exc))
            return
        self._retired_in_a_row += 1
        log.error(
            "poison_command",
            stream=self.stream,
            type=command.type,
            order_id=str(command.order_id),
            error=error,
        )
        assert self.engine is not None
        await self.runner.publish(self.engine, batch, reports, ())

    # --------------------------------------------------------- housekeeping

    async def _housekeeping(self) -> None:
        """Lag gauges and trimming; entries left with a consumer that lost the shard
        after reading them are claimed and applied."""
        self._next_housekeeping = time.monotonic() + self.settings.housekeeping_seconds
        entries = await self.entries.housekeeping()
        if entries:
            await self._process(entries, claimed=True)
