"""Worker jobs: e-mail delivery (idempotent, retried with back-off) and verification reminders.

`send_email` may run more than once for one message (arq retries, a worker killed mid-
job, an api that enqueues twice): the `email_message` row of its key is locked while
the message is sent and stamped `sent_at` afterwards, so a message goes out once (see
`mail.delivery`, shared with the execution notifier).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from arq import Retry, cron, func
from sqlalchemy import select, update

from brokerx_core.audit import record_audit
from brokerx_core.auth.otp import issue_code
from brokerx_core.db.models import Client
from brokerx_core.observability.logging import get_logger
from brokerx_worker.mail import SmtpSession
from brokerx_worker.mail.delivery import Outgoing, send_batch
from brokerx_worker.mail.templates import verification_reminder
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

# Reminders to clients who have not verified their e-mail, in days after sign-up.
REMINDER_DAYS = (1, 3)
REMINDER_CODE_TTL = timedelta(hours=24)
REMINDER_BATCH = 500


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


async def send_email(
    ctx: dict[str, Any],
    key: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    client_id: str | None = None,
) -> str:
    """Send one e-mail once per `key`: 'sent', 'already_sent' or 'failed' (gave up).

    A transient SMTP failure raises arq's `Retry` with back-off until
    `email_max_attempts` tries have been made.
    """
    settings: WorkerSettings = ctx["settings"]
    mail = Outgoing(
        key, to, subject, text, html, _uuid_or_none(client_id), int(ctx.get("job_try", 1))
    )
    smtp = SmtpSession(settings)
    try:
        result = await send_batch(ctx["sessionmaker"], smtp, settings, [mail])
    finally:
        await smtp.close()
    if result.retry_key is not None:
        raise Retry(defer=result.retry_delay)
    return result.outcomes[key]


def reminders_due(created_at: datetime, now: datetime) -> int:
    """How many reminders a client created at `created_at` should have received by `now`."""
    return sum(1 for days in REMINDER_DAYS if created_at <= now - timedelta(days=days))


async def send_verification_reminders(ctx: dict[str, Any]) -> int:
    """Remind unverified clients at J+1 and J+3 with a fresh code; returns mails queued.

    `client.reminders_sent` records how many went out, so a second run (or a second
    worker) sends nothing more; a client the job missed at J+1 gets only the J+3 one.
    """
    settings: WorkerSettings = ctx["settings"]
    now = datetime.now(UTC)
    secret = settings.jwt_secret.get_secret_value()
    outgoing: list[tuple[str, str, uuid.UUID, Any]] = []
    async with ctx["sessionmaker"]() as session, session.begin():
        rows = (
            await session.execute(
                select(
                    Client.id,
                    Client.email,
                    Client.first_name,
                    Client.created_at,
                    Client.reminders_sent,
                )
                .where(
                    Client.status == "pending",
                    Client.is_market_maker.is_(False),
                    Client.created_at <= now - timedelta(days=REMINDER_DAYS[0]),
                    Client.reminders_sent < len(REMINDER_DAYS),
                )
                .order_by(Client.created_at)
                .limit(REMINDER_BATCH)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            due = reminders_due(row.created_at, now)
            if row.reminders_sent >= due:
                continue
            code_id, code = await issue_code(
                session,
                secret=secret,
                client_id=row.id,
                purpose="email_verification",
                now=now,
                ttl=REMINDER_CODE_TTL,
            )
            await session.execute(
                update(Client).where(Client.id == row.id).values(reminders_sent=due)
            )
            await record_audit(
                session, "client.verification_reminded", row.id, None, None, None, reminder=due
            )
            mail = verification_reminder(
                row.first_name,
                code,
                int(REMINDER_CODE_TTL.total_seconds() // 3600),
                REMINDER_DAYS[due - 1],
            )
            outgoing.append((f"reminder:{row.id}:{due}", row.email, row.id, mail))
    # Enqueued only after the codes have committed.
    for key, to, client_id, mail in outgoing:
        await ctx["redis"].enqueue_job(
            "send_email",
            key,
            to,
            mail.subject,
            mail.text,
            mail.html,
            client_id=str(client_id),
            _job_id=f"email:{key}",
        )
    if outgoing:
        log.info("verification_reminders_queued", count=len(outgoing))
    return len(outgoing)


# A hard ceiling above `email_max_attempts`, in case settings are raised past arq's default.
FUNCTIONS: list[Any] = [func(send_email, name="send_email", max_tries=50)]
CRON_JOBS: list[Any] = [
    cron(
        send_verification_reminders,
        name="send_verification_reminders",
        minute={0, 15, 30, 45},
        unique=True,
        timeout=300,
    )
]
BACKGROUND_TASKS: list[Any] = []
