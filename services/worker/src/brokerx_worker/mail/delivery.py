"""Send e-mails once per key, many at a time: the `email_message` bookkeeping.

Every message has a key naming its cause (`exec:<report_id>`, `reminder:<client>:<n>`).
Its `email_message` row is inserted if missing and locked while the message is sent,
then stamped `sent_at`: a second send of the key (an arq retry, a redelivered report, a
second worker) waits for the lock, sees `sent_at` and sends nothing.

`send_batch` does this for many messages in one transaction per `CHUNK`: one INSERT of
the missing rows, one SELECT … FOR UPDATE in key order (batches sharing keys lock in
the same order), every message on the caller's SMTP connection, then one UPDATE of
`attempts` and `sent_at`. A crash between a send and its commit sends that chunk's
messages again later, as a crash between a send and its commit always could; a
cancellation stops sending and still commits what went out.

Messages are handled in order. A transient failure (SMTP down, 4xx) stops the batch
there unless that message has used its `email_max_attempts`: the result names the key
to retry and after how long; the messages after it are left for then. A permanent
failure (5xx), or a transient one on the last attempt, gives the message up ("failed")
and the batch goes on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerx_core.observability.logging import get_logger
from brokerx_worker.mail.sender import PermanentMailError, TransientMailError
from brokerx_worker.mail.session import SmtpSession
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

CHUNK = 10  # messages per transaction: what a crash mid-chunk may send twice
MAX_RETRY_DELAY_SECONDS = 300.0

Outcome = Literal["sent", "already_sent", "failed"]

_RESERVE = text(
    "INSERT INTO email_message (key, client_id, to_address, subject)"
    " SELECT k, c, t, s FROM unnest(CAST(:keys AS text[]), CAST(:clients AS uuid[]),"
    " CAST(:tos AS text[]), CAST(:subjects AS text[])) AS m(k, c, t, s)"
    " ORDER BY k ON CONFLICT (key) DO NOTHING"
)
_LOCK = text(
    "SELECT key, sent_at IS NOT NULL AS sent FROM email_message"
    " WHERE key = ANY(CAST(:keys AS text[])) ORDER BY key FOR UPDATE"
)
_STAMP = text(
    "UPDATE email_message SET attempts = attempts + 1, sent_at = CASE"
    " WHEN key = ANY(CAST(:sent AS text[])) THEN clock_timestamp() ELSE sent_at END"
    " WHERE key = ANY(CAST(:tried AS text[]))"
)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to send once per `key`; `attempt` is its try number (1 = first)."""

    key: str
    to: str
    subject: str
    text: str
    html: str
    client_id: uuid.UUID | None = None
    attempt: int = 1


@dataclass(slots=True)
class BatchResult:
    """What became of each key handled; `retry_key` (if any) and every key after it in
    the batch were not finished and should be tried again after `retry_delay` seconds."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    retry_key: str | None = None
    retry_delay: float = 0.0


def retry_delay(settings: WorkerSettings, attempt: int) -> float:
    """Exponential back-off: base, 2×base, 4×base, … capped at five minutes."""
    return float(
        min(settings.email_retry_base_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)
    )


async def send_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    smtp: SmtpSession,
    settings: WorkerSettings,
    mails: Sequence[Outgoing],
) -> BatchResult:
    """Send each message whose key has not been sent yet, in order (see module doc)."""
    result = BatchResult()
    first_of_key: dict[str, Outgoing] = {}
    for mail in mails:
        first_of_key.setdefault(mail.key, mail)
    unique = list(first_of_key.values())
    for start in range(0, len(unique), CHUNK):
        await _send_chunk(sessionmaker, smtp, settings, unique[start : start + CHUNK], result)
        if result.retry_key is not None:
            break
    return result


async def _send_chunk(
    sessionmaker: async_sessionmaker[AsyncSession],
    smtp: SmtpSession,
    settings: WorkerSettings,
    mails: list[Outgoing],
    result: BatchResult,
) -> None:
    keys = [mail.key for mail in mails]
    tried: list[str] = []
    sent: list[str] = []
    interrupted: asyncio.CancelledError | None = None
    async with sessionmaker() as session, session.begin():
        await session.execute(
            _RESERVE,
            {
                "keys": keys,
                "clients": [mail.client_id for mail in mails],
                "tos": [mail.to for mail in mails],
                "subjects": [mail.subject for mail in mails],
            },
        )
        rows = (await session.execute(_LOCK, {"keys": keys})).all()
        done = {row.key for row in rows if row.sent}
        try:
            for mail in mails:
                if _cancel_pending():  # a library swallowed our cancellation
                    raise asyncio.CancelledError
                if mail.key in done:
                    result.outcomes[mail.key] = "already_sent"
                    log.info("email_already_sent", key=mail.key)
                    continue
                tried.append(mail.key)
                if await _send_one(smtp, settings, mail, result):
                    sent.append(mail.key)
                if result.retry_key is not None:
                    break
        except asyncio.CancelledError as exc:  # stop sending, but record what went out
            interrupted = exc
        if tried:
            await session.execute(_STAMP, {"tried": tried, "sent": sent})
    if len(sent) == 1:
        log.info("email_sent", key=sent[0], attempt=mails[keys.index(sent[0])].attempt)
    elif sent:
        log.info("emails_sent", count=len(sent), first_key=sent[0], last_key=sent[-1])
    if interrupted is not None:
        raise interrupted


def _cancel_pending() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _send_one(
    smtp: SmtpSession, settings: WorkerSettings, mail: Outgoing, result: BatchResult
) -> bool:
    """Send `mail`, recording its outcome (or the retry) in `result`; True when sent."""
    try:
        await smtp.send(
            to=mail.to, subject=mail.subject, text=mail.text, html=mail.html, key=mail.key
        )
    except (TransientMailError, PermanentMailError) as exc:
        if isinstance(exc, PermanentMailError) or mail.attempt >= settings.email_max_attempts:
            result.outcomes[mail.key] = "failed"
            log.error("email_gave_up", key=mail.key, attempt=mail.attempt, error=str(exc))
            return False
        result.retry_key = mail.key
        result.retry_delay = retry_delay(settings, mail.attempt)
        log.warning(
            "email_retry",
            key=mail.key,
            attempt=mail.attempt,
            defer=result.retry_delay,
            error=str(exc),
        )
        return False
    result.outcomes[mail.key] = "sent"
    return True
