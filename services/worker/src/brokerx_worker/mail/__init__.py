"""Outgoing e-mail: SMTP delivery and the templates the worker renders itself."""

from brokerx_worker.mail.sender import PermanentMailError, TransientMailError
from brokerx_worker.mail.session import SmtpSession, deliver

__all__ = ["PermanentMailError", "SmtpSession", "TransientMailError", "deliver"]
