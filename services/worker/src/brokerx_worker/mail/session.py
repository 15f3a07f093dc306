"""SMTP delivery (aiosmtplib) over one connection reused for many messages.

Opening a connection (TCP, greeting, EHLO, then STARTTLS and login when configured)
costs more than sending a message on it, so `SmtpSession` keeps one open between
messages, one message at a time: it connects on first use, reconnects after a failure
or after `max_idle_seconds` unused (servers drop idle clients), and sends once more on
a fresh connection when a reused one turns out to have been dropped by the server. A
reply from the server (4xx, 5xx) leaves the connection in use.
"""

from __future__ import annotations

import asyncio
import contextlib
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib

from brokerx_worker.mail.mime import render
from brokerx_worker.mail.sender import build_message, mail_error
from brokerx_worker.settings import WorkerSettings

IDLE_SECONDS = 30.0
QUIT_TIMEOUT_SECONDS = 2.0


class SmtpSession:
    """`send` one message at a time; `close` when done (the connection stays open)."""

    def __init__(self, settings: WorkerSettings, *, max_idle_seconds: float = IDLE_SECONDS) -> None:
        self._settings = settings
        self._max_idle = max_idle_seconds
        self._sender = parseaddr(settings.mail_from)[1] or settings.mail_from
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        self._smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            use_tls=settings.smtp_tls,
            # False, not None: aiosmtplib would otherwise upgrade on its own initiative.
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_seconds,
        )
        self._last_used = 0.0
        self.connections = 0  # opened so far (for tests and benchmarks)

    async def send(self, *, to: str, subject: str, text: str, html: str, key: str) -> None:
        """Deliver one message; raises `TransientMailError` or `PermanentMailError`."""
        rendered = render(self._settings.mail_from, to, subject, text, html, key)
        message = (
            rendered
            if rendered is not None
            else build_message(self._settings, to, subject, text, html, key)
        )
        for last_try in (False, True):
            reused = self._smtp.is_connected and not self._idle_too_long()
            try:
                await self._transmit(to, message)
                return
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                raise mail_error(exc) from exc
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self._smtp.close()  # in an unknown state: start afresh next time
                if reused and not last_try and isinstance(exc, ConnectionError):
                    continue  # the server had dropped the idle connection
                raise mail_error(exc) from exc

    async def close(self) -> None:
        """Say goodbye to the server (best effort) and close the connection."""
        if self._smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await self._smtp.quit(timeout=QUIT_TIMEOUT_SECONDS)
        self._smtp.close()

    def _idle_too_long(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_used > self._max_idle

    async def _transmit(self, to: str, message: bytes | EmailMessage) -> None:
        if self._smtp.is_connected and self._idle_too_long():
            self._smtp.close()
        if not self._smtp.is_connected:
            await self._smtp.connect()
            self.connections += 1
        if isinstance(message, bytes):
            await self._smtp.sendmail(self._sender, [parseaddr(to)[1] or to], message)
        else:
            await self._smtp.send_message(message)
        self._last_used = asyncio.get_running_loop().time()


async def deliver(
    settings: WorkerSettings, *, to: str, subject: str, text: str, html: str, key: str
) -> None:
    """Send one message through `settings.smtp_host:smtp_port` on a connection of its own."""
    session = SmtpSession(settings)
    try:
        await session.send(to=to, subject=subject, text=text, html=html, key=key)
    finally:
        await session.close()
