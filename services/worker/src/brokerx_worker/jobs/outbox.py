"""Outbox relay: republish commands that were committed but never reached the engine.

The api publishes each command right after its commit (fast path). When that XADD was
lost (crash between commit and XADD, Redis down or flushed), the row stays in `outbox`
until the engine applies the command and deletes it. Every
`outbox_relay_interval_seconds` this loop takes the rows older than
`outbox_republish_after_seconds` whose last publish is that old too (doubling after
each attempt, see MAX_BACKOFF_DOUBLINGS), oldest first, 500 at a time under
`FOR UPDATE SKIP LOCKED` (so several workers share the work), XADDs them with their
`outbox_id` and stamps `published_at`/`attempts`. A republished command the engine
already applied is harmless: the engine skips commands whose row is gone.

Each command goes to the stream its symbol maps to under the CURRENT `MATCHING_SHARDS`,
not to the row's `stream` column (the shard when it was written): after the shard count
changed, that stream may have no consumer any more, and a cancel or replace sent there
would never be applied (new orders are also re-picked by recovery, by symbol).

When nothing is left behind (the fast path works) a pass is one index probe in
autocommit, whatever the order rate: no transaction, no row touched.

It runs as a background task rather than an arq cron job because it must keep going
when Redis is down (arq's scheduler lives in Redis) and needs sub-minute cadence.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.commands import PendingCommand, pending_from_outbox, publish_commands
from brokerx_core.observability.logging import get_logger
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

BATCH_SIZE = 500

OUTBOX_REPUBLISHED = Counter(
    "brokerx_outbox_republished_total", "Commands republished by the outbox relay"
)
OUTBOX_RELAY_ERRORS = Counter(
    "brokerx_outbox_relay_errors_total", "Relay passes that failed (database or Redis down)"
)

# A row the relay already published waits twice as long after each attempt (capped at
# 2^MAX_BACKOFF_DOUBLINGS × the delay): while the engine is down, its backlog is not
# re-sent every couple of seconds, yet a lost entry is still retried within a minute.
MAX_BACKOFF_DOUBLINGS = 5
_DUE = text(
    "SELECT id, stream, payload FROM outbox"
    " WHERE created_at < now() - make_interval(secs => :after)"
    " AND (published_at IS NULL OR published_at < now()"
    "      - make_interval(secs => :after * power(2, least(attempts, :doublings))))"
    " ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
)
# The probe of every pass, in autocommit: one index lookup on `created_at`, no
# transaction. Only when it finds a row old enough does the locking pass run.
_ANY_OLD = text(
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE created_at < now() - make_interval(secs => :after))"
)
_STAMP = text(
    "UPDATE outbox SET published_at = now(), attempts = attempts + 1 WHERE id = ANY(:ids)"
)


class RelayPublishFailed(Exception):
    """The XADDs of a pass did not go through; the rows stay due for the next pass."""


async def relay_pass(
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    *,
    republish_after_seconds: float,
    shards: int,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Republish one batch of due outbox rows to their symbols' streams under `shards`
    (the current `MATCHING_SHARDS`); returns how many were published.

    Raises when PostgreSQL or Redis fails: nothing is stamped and the rows stay due.
    """
    if not await _any_old_row(sessionmaker, republish_after_seconds):
        return 0  # the usual case: the fast path published everything
    async with sessionmaker() as session, session.begin():
        rows = (
            await session.execute(
                _DUE,
                {
                    "after": float(republish_after_seconds),
                    "doublings": MAX_BACKOFF_DOUBLINGS,
                    "limit": batch_size,
                },
            )
        ).all()
        if not rows:
            return 0
        pending: list[PendingCommand] = []
        rerouted = 0
        for row in rows:
            try:
                command = pending_from_outbox(row.id, row.payload, shards=shards)
            except ValidationError:
                # Not a command: publishing it again and again would not help the engine.
                log.error("outbox_row_unreadable", outbox_id=row.id)
                continue
            pending.append(command)
            rerouted += command.stream != row.stream
        if rerouted:  # written under another shard count
            log.warning("outbox_rerouted", count=rerouted, shards=shards)
        if pending:
            sent = await publish_commands(redis, pending)
            if sent != len(pending):
                raise RelayPublishFailed(f"{len(pending)} commands could not be published")
        # Unreadable rows are stamped too, so they do not block the head of the queue.
        await session.execute(_STAMP, {"ids": [row.id for row in rows]})
    OUTBOX_REPUBLISHED.inc(len(pending))
    log.info("outbox_republished", count=len(pending), first_id=rows[0].id)
    return len(pending)


async def _any_old_row(
    sessionmaker: async_sessionmaker[AsyncSession], republish_after_seconds: float
) -> bool:
    async with sessionmaker() as session:
        conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        found = await conn.scalar(_ANY_OLD, {"after": float(republish_after_seconds)})
    return bool(found)


async def outbox_relay(ctx: dict[str, Any]) -> None:
    """Background task: run relay passes forever; log failures and try again."""
    settings: WorkerSettings = ctx["settings"]
    while True:
        full_batch = False
        try:
            published = await relay_pass(
                ctx["sessionmaker"],
                ctx["streams"],
                republish_after_seconds=settings.outbox_republish_after_seconds,
                shards=settings.matching_shards,
            )
            full_batch = published >= BATCH_SIZE
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the relay must outlive any outage: log, retry
            raise_if_cancelled()  # unless the error was our cancel, lost by a library
            OUTBOX_RELAY_ERRORS.inc()
            log.warning("outbox_relay_failed", error=str(exc), error_type=type(exc).__name__)
        if not full_batch:  # a full batch means more are due: go again at once
            await asyncio.sleep(settings.outbox_relay_interval_seconds)


FUNCTIONS: list[Any] = []
CRON_JOBS: list[Any] = []
BACKGROUND_TASKS: list[Any] = [outbox_relay]
