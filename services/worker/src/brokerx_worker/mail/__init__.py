"""Outgoing e-mail: SMTP delivery and the templates the worker renders itself."""

from brokerx_worker.mail.sender import PermanentMailError, TransientMailError, deliver

__all__ = ["PermanentMailError", "TransientMailError", "deliver"]
