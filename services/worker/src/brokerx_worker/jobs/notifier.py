"""Execution confirmations by e-mail: a consumer of `executions` in group `notifier`.

For each `fill`, `partial_fill`, `canceled` and `expired` report the owner gets one
e-mail (not for `new` and the other events), unless they turned confirmations off. The
send goes through `send_email` under the key `exec:<report_id>`, so a report delivered
twice (redelivery, a reclaimed entry, an engine that published it twice) sends once.
The entry is acknowledged after the send, or after deciding there is nothing to send.

- The group starts at id `0`, not `$`: reports published before it existed (first
  deploy, or an engine that republished after a Redis flush before the notifier noticed)
  are still confirmed; the e-mail keys make re-reading harmless.
- A missing group (Redis flushed) is recreated the same way, then reading goes on.
- A transient SMTP failure leaves the entry pending: the consumer backs off (the
  delay `send_email` asks for) and re-reads its own pending entries first, in order.
- Entries left pending by a dead consumer are reclaimed with XAUTOCLAIM once idle.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq import Retry
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import text

from brokerx_core.messages import ExecutionReport, decode_execution
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import EXECUTIONS_STREAM, NOTIFIER_GROUP
from brokerx_worker.jobs.email import send_email
from brokerx_worker.mail_confirmations import OrderTerms, execution_confirmation

log = get_logger(__name__)

CONFIRMED_EVENTS = frozenset({"fill", "partial_fill", "canceled", "expired"})

Entry = tuple[bytes, dict[bytes, bytes] | None]

_RECIPIENT = text(
    "SELECT c.email, c.first_name, c.email_confirmations, c.is_market_maker,"
    " o.quantity, o.type, o.limit_price, o.time_in_force"
    " FROM client c LEFT JOIN client_order o ON o.id = :order_id"
    " WHERE c.id = :client_id"
)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    block_ms: int = 5_000
    batch: int = 50
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
        # Attempts per report in this process: `send_email` gives up after
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
        loop = asyncio.get_running_loop()
        backlog = True  # our own pending entries first (a restart under the same name)
        next_claim = 0.0
        group_ready = False
        while True:
            _raise_if_cancelled()
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
                if backlog and not entries:
                    backlog = False
                    continue
                if not await self._process(entries):
                    backlog = True
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis flushed: the stream and group are gone
                    log.warning("notifier_group_missing", stream=EXECUTIONS_STREAM)
                    group_ready, backlog = False, False
                    continue
                log.warning("notifier_redis_error", error=str(exc))
                await asyncio.sleep(self.config.redis_retry_seconds)
            except (RedisError, OSError) as exc:
                log.warning("notifier_redis_error", error=str(exc))
                group_ready = False
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
        """Handle entries in order, acknowledging each; False when one must be retried
        later (it and the ones after it stay pending)."""
        for entry_id, fields in entries:
            _raise_if_cancelled()
            delay = await self._handle(entry_id, fields)
            if delay is not None:
                await asyncio.sleep(delay)
                return False
            await self._redis.xack(EXECUTIONS_STREAM, NOTIFIER_GROUP, entry_id)
        return True

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> float | None:
        """Send the confirmation of one entry; None when done, else seconds to back off."""
        if not fields:  # trimmed away while pending: nothing left to confirm
            return None
        try:
            report = decode_execution(fields)
        except ValidationError:
            log.error("notifier_bad_entry", id=entry_id.decode())
            return None
        if report.event not in CONFIRMED_EVENTS:
            return None
        return await self._confirm(report)

    async def _confirm(self, report: ExecutionReport) -> float | None:
        async with self._ctx["sessionmaker"]() as session:
            row = (
                await session.execute(
                    _RECIPIENT, {"client_id": report.client_id, "order_id": report.order_id}
                )
            ).first()
        if row is None:
            log.warning("notifier_unknown_client", client_id=str(report.client_id))
            return None
        # The market maker trades all day long: it gets no confirmations.
        if not row.email_confirmations or row.is_market_maker:
            return None
        terms = (
            OrderTerms(row.quantity, row.type, row.limit_price, row.time_in_force)
            if row.quantity is not None
            else None
        )
        mail = execution_confirmation(report, row.first_name, terms)
        tries = self._tries.get(report.report_id, 0) + 1
        try:
            await send_email(
                {**self._ctx, "job_try": tries},
                f"exec:{report.report_id}",
                row.email,
                mail.subject,
                mail.text,
                mail.html,
                client_id=str(report.client_id),
            )
        except Retry as retry:
            self._tries[report.report_id] = tries
            return (retry.defer_score or 1000) / 1000
        self._tries.pop(report.report_id, None)
        return None


def _raise_if_cancelled() -> None:
    """Honour a pending cancellation that a library swallowed (on 3.11 `asyncio.wait_for`,
    used by aiosmtplib, can lose a cancel that races with its timeout): without this the
    worker's shutdown would wait forever for this task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def execution_notifier(ctx: dict[str, Any]) -> None:
    """Background task: confirm executions by e-mail until the worker stops."""
    await Notifier(ctx, consumer_name()).run()


FUNCTIONS: list[Any] = []
CRON_JOBS: list[Any] = []
BACKGROUND_TASKS: list[Any] = [execution_notifier]
