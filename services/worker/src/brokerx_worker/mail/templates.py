"""E-mails the worker composes itself: the reminder to verify an account."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    text: str
    html: str


def verification_reminder(first_name: str, code: str, hours: int, days: int) -> RenderedMail:
    """Reminder sent J+1 and J+3 to a client who has not verified, with a fresh code."""
    greeting = f"Hello {first_name},"
    lead = (
        f"You opened a BrokerX account {days} day{'s' if days > 1 else ''} ago but have "
        "not verified your e-mail address yet. Enter this code to finish:"
    )
    footer = (
        f"The code is valid for {hours} hours and replaces any earlier one. "
        "If you did not sign up, ignore this e-mail."
    )
    text = f"{greeting}\n\n{lead}\n\n    {code}\n\n{footer}\n\n— BrokerX\n"
    body = (
        '<!doctype html><html><body style="font-family:Arial,sans-serif;color:#1a1a1a">'
        f"<p>{html.escape(greeting)}</p><p>{html.escape(lead)}</p>"
        '<p style="font-size:28px;font-weight:bold;letter-spacing:6px">'
        f"{html.escape(code)}</p>"
        f'<p style="color:#666">{html.escape(footer)}</p>'
        '<p style="color:#666">— BrokerX</p></body></html>'
    )
    return RenderedMail("Reminder: verify your BrokerX e-mail address", text, body)
