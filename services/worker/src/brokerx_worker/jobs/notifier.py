"""Execution confirmations by e-mail: a consumer of `executions` in group `notifier`.

For each `fill`, `partial_fill`, `canceled` and `expired` report the owner gets one
e-mail (not for `new` and the other events), unless they turned confirmations off. The
send goes through `mail.delivery` under the key `exec:<report_id>`, so a report
delivered twice (redelivery, a reclaimed entry, an engine that published it twice)
sends once. The entry is acknowledged after the send, or after deciding there is
nothing to send.

Reports are handled a batch at a time (up to `batch` entries per read), in stream
order: other events are skipped without touching the database, one query finds the
owners of the whole batch (`jobs.confirmations`), the e-mails go out on one SMTP
connection kept open while reports keep coming, and one XACK acknowledges the batch.
After a batch smaller than `batch` the consumer lingers `linger_ms` before reading
again, so a steady trickle of reports is still handled in batches.

- The group starts at id `0`, not `$`: reports published before it existed (first
  deploy, or an engine that republished after a Redis flush before the notifier noticed)
  are still confirmed; the e-mail keys make re-reading harmless.
- A missing group (Redis flushed) is recreated the same way, then reading goes on.
- A transient SMTP failure leaves the entry (and the ones after it) pending: the
  consumer backs off (the delay `send_batch` asks for) and re-reads its own pending
  entries first, in order. So does a PostgreSQL outage.
- Entries left pending by a dead consumer are reclaimed with XAUTOCLAIM once idle.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import SQLAlchemyError

from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.messages import ExecutionReport, decode_execution
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import EXECUTIONS_STREAM, NOTIFIER_GROUP
from brokerx_worker.jobs.confirmations import CONFIRMED_EVENTS, confirmation_mails
from brokerx_worker.mail import SmtpSession
from brokerx_worker.mail.delivery import BatchResult, send_batch

log = get_logger(__name__)

__all__ = ["CONFIRMED_EVENTS", "Notifier", "NotifierConfig", "execution_notifier"]

Entry = tuple[bytes, dict[bytes, bytes] | None]


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    block_ms: int = 5_000
    batch: int = 200
    linger_ms: int = 100  # after a partial batch: let reports gather before reading again
    claim_idle_ms: int = 60_000  # a consumer silent this long is presumed dead
    claim_interval_seconds: float = 30.0
    redis_retry_seconds: float = 1.0


def consumer_name() -> str:
    """This process in the group (a restart is a new consumer; XAUTOCLAIM adopts the old)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Notifier:
    """The consumer loop; `run()` until cancelled."""

    def __init__(
        self, ctx: dict[str, Any], consumer: str, config: NotifierConfig | None = None
    ) -> None:
        self._ctx = ctx
        self._redis: Redis = ctx["streams"]
        self.consumer = consumer
        self.config = config or NotifierConfig()
        self.smtp = SmtpSession(ctx["settings"])
        # Attempts per report in this process: `send_batch` gives up after
        # `email_max_attempts` and asks for back-off in between.
        self._tries: dict[str, int] = {}

    async def ensure_group(self) -> None:
        """Create the group (and the stream) at id 0 unless it exists."""
        try:
            await self._redis.xgroup_create(
                EXECUTIONS_STREAM, NOTIFIER_GROUP, id="0", mkstream=True
            )
            log.info("notifier_group_created", stream=EXECUTIONS_STREAM)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        try:
            await self._consume()
        finally:
            await self.smtp.close()

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = True  # our own pending entries first (a restart under the same name)
        next_claim = 0.0
        group_ready = False
        while True:
            raise_if_cancelled()
            try:
                if not group_ready:
                    await self.ensure_group()
                    group_ready = True
                if loop.time() >= next_claim:
                    next_claim = loop.time() + self.config.claim_interval_seconds
                    if not await self._process(await self._reclaim()):
                        backlog = True
                        continue
                entries = await self._read(backlog)
                if not entries:
                    backlog = False
                    await self.smtp.close()  # idle: do not hold the server's connection
                    continue
                if not await self._process(entries):
                    backlog = True
                elif not backlog and len(entries) < self.config.batch:
                    await asyncio.sleep(self.config.linger_ms / 1000)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis flushed: the stream and group are gone
                    log.warning("notifier_group_missing", stream=EXECUTIONS_STREAM)
                    group_ready, backlog = False, False
                    continue
                log.warning("notifier_redis_error", error=str(exc))
                backlog = True
                await asyncio.sleep(self.config.redis_retry_seconds)
            except RedisError as exc:  # redis-py wraps its socket errors in these
                log.warning("notifier_redis_error", error=str(exc))
                group_ready, backlog = False, True
                await asyncio.sleep(self.config.redis_retry_seconds)
            except (SQLAlchemyError, OSError) as exc:  # PostgreSQL away: the batch stays pending
                # asyncpg raises a refused connection as a bare OSError, not wrapped.
                first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
                log.warning("notifier_database_error", error=first_line)
                backlog = True
                await asyncio.sleep(self.config.redis_retry_seconds)

    async def _read(self, backlog: bool) -> Sequence[Entry]:
        response = await self._redis.xreadgroup(
            NOTIFIER_GROUP,
            self.consumer,
            {EXECUTIONS_STREAM: "0" if backlog else ">"},
            count=self.config.batch,
            block=None if backlog else self.config.block_ms,
        )
        return response[0][1] if response else []

    async def _reclaim(self) -> Sequence[Entry]:
        """Adopt entries another consumer left pending for longer than `claim_idle_ms`."""
        claimed: list[Entry] = []
        cursor: bytes | str = "0-0"
        while True:
            result = await self._redis.xautoclaim(
                EXECUTIONS_STREAM,
                NOTIFIER_GROUP,
                self.consumer,
                min_idle_time=self.config.claim_idle_ms,
                start_id=cursor,
                count=self.config.batch,
            )
            cursor, entries = result[0], result[1]
            claimed.extend(entries)
            if cursor in (b"0-0", "0-0") or not entries:
                break
        if claimed:
            log.info("notifier_reclaimed", count=len(claimed))
        return claimed

    async def _process(self, entries: Sequence[Entry]) -> bool:
        """Handle entries in order and acknowledge them; False when one must be retried
        later (it and the ones after it stay pending)."""
        if not entries:
            return True
        raise_if_cancelled()
        reports = [_confirmable(entry_id, fields) for entry_id, fields in entries]
        wanted = [report for report in reports if report is not None]
        sessionmaker = self._ctx["sessionmaker"]
        mails = await confirmation_mails(sessionmaker, wanted, self._tries) if wanted else {}
        result = BatchResult()
        if mails:
            outgoing = [mails[r.report_id] for r in wanted if r.report_id in mails]
            result = await send_batch(sessionmaker, self.smtp, self._ctx["settings"], outgoing)
        report_of_key = {mail.key: report_id for report_id, mail in mails.items()}
        for key in result.outcomes:
            self._tries.pop(report_of_key[key], None)
        done = len(entries)
        if result.retry_key is not None:
            retry_report = report_of_key[result.retry_key]
            self._tries[retry_report] = mails[retry_report].attempt
            done = next(
                i for i, r in enumerate(reports) if r is not None and r.report_id == retry_report
            )
        if done:
            ids = [entry_id for entry_id, _ in entries[:done]]
            await self._redis.xack(EXECUTIONS_STREAM, NOTIFIER_GROUP, *ids)
        if result.retry_key is not None:
            await asyncio.sleep(result.retry_delay)
            return False
        return True


def _confirmable(entry_id: bytes, fields: dict[bytes, bytes] | None) -> ExecutionReport | None:
    """The report of an entry if it is an event to confirm by e-mail, else None."""
    if not fields:  # trimmed away while pending: nothing left to confirm
        return None
    try:
        report = decode_execution(fields)
    except ValidationError:
        log.error("notifier_bad_entry", id=entry_id.decode())
        return None
    return report if report.event in CONFIRMED_EVENTS else None


async def execution_notifier(ctx: dict[str, Any]) -> None:
    """Background task: confirm executions by e-mail until the worker stops."""
    await Notifier(ctx, consumer_name()).run()


FUNCTIONS: list[Any] = []
CRON_JOBS: list[Any] = []
BACKGROUND_TASKS: list[Any] = [execution_notifier]
