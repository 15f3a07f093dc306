"""Shard ownership: one PostgreSQL session advisory lock per shard.

A process serves shard n only while one of its connections holds
`pg_try_advisory_lock(shard_lock_base + n)`, and it runs that shard's batch
transactions on that very connection: if the connection dies the lock is gone and so is
the ability to commit (fencing). Every `shard_poll_seconds` the manager tries the locks
of the shards it does not own, so a second process is a hot standby that takes a shard
as soon as PostgreSQL frees its lock — immediately when the owner's socket closes
(process killed), within the keepalive settings otherwise (host lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from brokerx_core.observability.logging import get_logger
from brokerx_matching import metrics
from brokerx_matching.consumer import ShardConsumer, ShardLost
from brokerx_matching.executions_stream import executions_housekeeping
from brokerx_matching.settings import MatchingSettings

log = get_logger(__name__)

Connection = Any  # asyncpg.Connection


def asyncpg_dsn(settings: MatchingSettings) -> str:
    """`database_url` as a libpq DSN with DATABASE_PASSWORD(_FILE) merged in.

    What `settings.libpq_url` gives, without importing SQLAlchemy for it (a large part
    of the start-up time the recovery budget cannot spare, see service.py).
    """
    parts = urlsplit(settings.database_url)
    netloc = parts.netloc
    if settings.database_password is not None:
        credentials, _, host = netloc.rpartition("@")
        user = credentials.split(":", 1)[0]
        password = quote(settings.database_password.get_secret_value(), safe="")
        netloc = f"{user}:{password}@{host}"
    return urlunsplit(("postgresql", netloc, parts.path, parts.query, parts.fragment))


async def connect(settings: MatchingSettings) -> Connection:
    """A dedicated connection for a shard lock and its batch transactions."""
    keepalive = settings.db_keepalive_idle_seconds
    return await asyncpg.connect(
        asyncpg_dsn(settings),
        timeout=5.0,
        # Prepared statements are reused for every batch on this connection.
        statement_cache_size=256,
        server_settings={
            "application_name": f"{settings.service_name}-shard",
            # The server notices a vanished client (host crash, partition) within
            # seconds, freeing the lock for the standby.
            "tcp_keepalives_idle": str(keepalive),
            "tcp_keepalives_interval": str(max(1, keepalive // 2)),
            "tcp_keepalives_count": "3",
            # ... even while it is busy running one of its queries (PostgreSQL ≥ 14).
            "client_connection_check_interval": "1000",
            "statement_timeout": str(settings.db_statement_timeout_ms),
            # Only the engine's own statements run here, all lookups by key with array
            # parameters whose length changes every batch. Left to choose, PostgreSQL
            # plans the batch statements (large CTEs) afresh at each execution, which
            # cost it more than running them (~0.6 ms per batch); one plan is kept
            # instead, and it must not scan: a plan made while a table was small (a
            # fresh database) would otherwise keep scanning it as it grows, and the
            # tables a batch updates are full of dead row versions between vacuums.
            "plan_cache_mode": "force_generic_plan",
            "enable_seqscan": "off",
        },
    )


async def _close(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(conn.close(), 2.0)
    if not conn.is_closed():
        conn.terminate()


class ShardManager:
    """Acquires free shards and runs one `ShardConsumer` task per owned shard."""

    def __init__(self, settings: MatchingSettings, redis: Any, stop: asyncio.Event) -> None:
        self.settings = settings
        self.redis = redis
        self.stop = stop
        self.consumers: dict[int, ShardConsumer] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._probe: Connection | None = None
        # Set once the shards taken at start are recovered (or gave up): the ops side
        # starts then. A standby that took nothing sets it at once.
        self.first_round = asyncio.Event()
        # One rebuild at a time: rebuilding is CPU-bound, so interleaving four of them
        # only delays every shard to the end; in turn, the first serves at once.
        self.rebuilding = asyncio.Lock()
        self._next_executions_trim = 0.0

    @property
    def owned_shards(self) -> list[int]:
        """Shards whose lock this process holds (serving, or recovering)."""
        return sorted(self._tasks)

    @property
    def serving_shards(self) -> list[int]:
        """Owned shards that finished recovery at least once."""
        return sorted(s for s, c in self.consumers.items() if c.recovered.is_set())

    async def run(self) -> None:
        """Poll the locks until `stop`; then stop the consumers and release the locks."""
        first_round: asyncio.Task[None] | None = None
        try:
            while not self.stop.is_set():
                await self._acquire_free_shards()
                if first_round is None:
                    first_round = asyncio.create_task(self._first_round_done())
                await self._executions_housekeeping()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), self.settings.shard_poll_seconds)
        finally:
            if first_round is not None:
                first_round.cancel()
            self.first_round.set()
            await self._shutdown()

    async def _first_round_done(self) -> None:
        for shard, consumer in list(self.consumers.items()):
            task = self._tasks.get(shard)
            recovered = asyncio.ensure_future(consumer.recovered.wait())
            waiting: set[asyncio.Future[Any]] = {recovered}
            if task is not None:
                waiting.add(task)
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            recovered.cancel()
        self.first_round.set()

    async def _acquire_free_shards(self) -> None:
        base = self.settings.shard_lock_base
        limit = self.settings.max_owned_shards or self.settings.matching_shards
        for shard in range(self.settings.matching_shards):
            if len(self._tasks) >= limit:
                return
            if shard in self._tasks or self.stop.is_set():
                continue
            try:
                if self._probe is None or self._probe.is_closed():
                    self._probe = await connect(self.settings)
                acquired = await self._probe.fetchval(
                    "SELECT pg_try_advisory_lock($1)", base + shard
                )
            except Exception as exc:  # PostgreSQL down: try again at the next poll
                log.warning("shard_lock_poll_failed", shard=shard, error=repr(exc))
                if self._probe is not None:
                    await _close(self._probe)
                self._probe = None
                return
            if acquired:
                conn, self._probe = self._probe, None
                self._start(shard, conn)

    def _start(self, shard: int, conn: Connection) -> None:
        consumer = ShardConsumer(
            shard, conn, self.redis, self.settings, self.stop, rebuilding=self.rebuilding
        )
        self.consumers[shard] = consumer
        self._tasks[shard] = asyncio.create_task(
            self._serve(shard, consumer), name=f"shard-{shard}"
        )
        metrics.SHARDS_OWNED.set(len(self._tasks))
        log.info("shard_acquired", shard=shard, consumer=self.settings.consumer)

    async def _serve(self, shard: int, consumer: ShardConsumer) -> None:
        try:
            await consumer.run()
        except ShardLost as exc:
            log.warning("shard_lost", shard=shard, error=repr(exc.__cause__))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("shard_consumer_crashed", shard=shard, error=repr(exc))
        finally:
            # Closing the connection releases the lock: the standby takes over.
            await _close(consumer.conn)
            self._tasks.pop(shard, None)
            self.consumers.pop(shard, None)
            metrics.SHARDS_OWNED.set(len(self._tasks))

    async def _executions_housekeeping(self) -> None:
        """Lag of the `executions` readers (the notifier group), seen from the producer,
        at every poll; trimming below what they acknowledged at the housekeeping pace."""
        now = time.monotonic()
        trim = now >= self._next_executions_trim
        if trim:
            self._next_executions_trim = now + self.settings.housekeeping_seconds
        await executions_housekeeping(
            self.redis,
            maxlen=self.settings.executions_maxlen,
            trim=trim,
            retention_seconds=self.settings.executions_retention_seconds,
        )

    async def _shutdown(self) -> None:
        tasks = list(self._tasks.values())
        if tasks:
            # Consumers watch `stop`: each finishes its batch (bounded by block_ms).
            _done, pending = await asyncio.wait(tasks, timeout=10.0)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._probe is not None:
            await _close(self._probe)
            self._probe = None
        metrics.SHARDS_OWNED.set(0)
