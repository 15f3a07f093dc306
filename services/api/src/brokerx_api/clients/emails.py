"""The e-mails the api sends (verification code, login code, second factor changed) and
their hand-off to the worker.

The api only renders the message; the worker's `send_email` job delivers it over SMTP,
retries on failure and records it in `email_message` so a job that runs twice sends
once. Enqueue only after the transaction that created the code has committed: a mail
must never carry a code the database does not hold.
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    key: str  # what caused the mail; the worker sends each key once
    to: str
    subject: str
    text: str
    html: str
    client_id: uuid.UUID | None = None


def _html_page(greeting: str, lead: str, code: str | None, footer: str) -> str:
    shown_code = (
        f'<p style="font-size:28px;font-weight:bold;letter-spacing:6px">{html.escape(code)}</p>'
        if code is not None
        else ""
    )
    return (
        '<!doctype html><html><body style="font-family:Arial,sans-serif;color:#1a1a1a">'
        f"<p>{html.escape(greeting)}</p><p>{html.escape(lead)}</p>{shown_code}"
        f'<p style="color:#666">{html.escape(footer)}</p>'
        '<p style="color:#666">— BrokerX</p></body></html>'
    )


def _message(
    key: str,
    to: str,
    subject: str,
    client_id: uuid.UUID,
    *,
    greeting: str,
    lead: str,
    code: str | None,
    footer: str,
) -> OutgoingEmail:
    """One mail in both parts: the plain text (the code indented on its own line) and HTML."""
    shown_code = f"    {code}\n\n" if code is not None else ""
    text = f"{greeting}\n\n{lead}\n\n{shown_code}{footer}\n\n— BrokerX\n"
    return OutgoingEmail(
        key=key,
        to=to,
        subject=subject,
        text=text,
        html=_html_page(greeting, lead, code, footer),
        client_id=client_id,
    )


def verification_email(
    code_id: uuid.UUID, client_id: uuid.UUID, to: str, first_name: str, code: str, hours: int
) -> OutgoingEmail:
    """The sign-up e-mail carrying the 6-digit verification code."""
    greeting = f"Hello {first_name},"
    lead = "Welcome to BrokerX. Enter this code to verify your e-mail address:"
    footer = (
        f"The code is valid for {hours} hours and works once. "
        "If you did not sign up, ignore this e-mail."
    )
    return _message(
        f"verification:{code_id}",
        to,
        "Verify your BrokerX e-mail address",
        client_id,
        greeting=greeting,
        lead=lead,
        code=code,
        footer=footer,
    )


def login_code_email(
    code_id: uuid.UUID, client_id: uuid.UUID, to: str, first_name: str, code: str, minutes: int
) -> OutgoingEmail:
    """The second-factor e-mail carrying a 6-digit login code."""
    greeting = f"Hello {first_name},"
    lead = "Someone (hopefully you) signed in to BrokerX. Your login code is:"
    footer = (
        f"The code is valid for {minutes} minutes and works once. If this was not you, "
        "change your password: your password is known to someone else."
    )
    return _message(
        f"mfa_login:{code_id}",
        to,
        "Your BrokerX login code",
        client_id,
        greeting=greeting,
        lead=lead,
        code=code,
        footer=footer,
    )


MFA_METHOD_WORDS = {
    "totp": "a code from your authenticator app",
    "email": "a code e-mailed to this address",
}


def mfa_changed_email(
    change_id: uuid.UUID,
    client_id: uuid.UUID,
    to: str,
    first_name: str,
    method: str,
    changed_at: datetime,
) -> OutgoingEmail:
    """The notice that the account's second factor changed (and other sessions ended)."""
    greeting = f"Hello {first_name},"
    when = changed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lead = (
        f"The second factor of your BrokerX account was changed on {when}: logging in now "
        f"takes {MFA_METHOD_WORDS.get(method, method)}. Every other session of your "
        "account was signed out."
    )
    footer = (
        "If you did not make this change, someone else has access to your account: "
        "contact BrokerX support at once."
    )
    return _message(
        f"mfa_changed:{change_id}",
        to,
        "Your BrokerX second factor was changed",
        client_id,
        greeting=greeting,
        lead=lead,
        code=None,
        footer=footer,
    )


async def enqueue_email(arq: Any, mail: OutgoingEmail) -> bool:
    """Hand the mail to the worker (de-duplicated by key). Call after the commit.

    A Redis outage must not turn a committed sign-up into an error the client would
    retry into `email_taken`: the failure is logged and the client can ask for a resend
    (the reminder job also sends a fresh code).
    """
    try:
        job = await arq.enqueue_job(
            "send_email",
            mail.key,
            mail.to,
            mail.subject,
            mail.text,
            mail.html,
            client_id=str(mail.client_id) if mail.client_id else None,
            _job_id=f"email:{mail.key}",
        )
    except (RedisError, OSError):
        log.exception("email_enqueue_failed", key=mail.key)
        return False
    return job is not None
