"""SMTP delivery (aiosmtplib): multipart plain text + HTML, STARTTLS/TLS/auth by settings."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from brokerx_worker.settings import WorkerSettings


class TransientMailError(Exception):
    """The server or the network failed in a way worth retrying (4xx, timeouts, refused)."""


class PermanentMailError(Exception):
    """The server refused the message for good (5xx): retrying cannot help."""


def build_message(
    settings: WorkerSettings, to: str, subject: str, text: str, html: str, key: str
) -> EmailMessage:
    """A multipart/alternative message; the plain-text part comes first."""
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="brokerx.local")
    # Lets support find what caused a mail (the email_message key).
    message["X-BrokerX-Key"] = key
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


async def deliver(
    settings: WorkerSettings, *, to: str, subject: str, text: str, html: str, key: str
) -> None:
    """Send one message through `settings.smtp_host:smtp_port`."""
    message = build_message(settings, to, subject, text, html, key)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_tls,
            # False, not None: aiosmtplib would otherwise upgrade on its own initiative.
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
    except aiosmtplib.SMTPResponseException as exc:
        if 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            raise PermanentMailError(f"{exc.code} {exc.message}") from exc
        raise TransientMailError(f"{exc.code} {exc.message}") from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise PermanentMailError(str(exc)) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientMailError(str(exc) or type(exc).__name__) from exc
