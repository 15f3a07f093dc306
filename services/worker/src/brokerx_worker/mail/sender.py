"""Outgoing mail errors and the stdlib-built message (see `mail.session` for delivery)."""

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
    """A multipart/alternative message; the plain-text part comes first.

    The stdlib's version of `mail.mime.render`, for headers that need encoding.
    """
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


def mail_error(exc: Exception) -> TransientMailError | PermanentMailError:
    """What an SMTP or network failure means for the message: retry it, or give up."""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if 500 <= exc.code < 600 and not isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            return PermanentMailError(f"{exc.code} {exc.message}")
        return TransientMailError(f"{exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return PermanentMailError(str(exc))
    return TransientMailError(str(exc) or type(exc).__name__)
