"""The worker's hand-written MIME (`mail.mime.render`) reads like the stdlib's message."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from brokerx_worker.mail.mime import render
from brokerx_worker.mail.sender import build_message
from brokerx_worker.settings import WorkerSettings

SETTINGS = WorkerSettings(environment="test")
TEXT = (
    "Hello Zoë,\n\nYour order to buy 10 AAPL is filled.\n\n  Remaining:      0\n"
    "A line that is long enough to be wrapped by quoted-printable: " + "x" * 120 + "\n"
    ". a line starting with a dot\nequals = sign\n\n— BrokerX\n"
)
HTML = '<!doctype html><html><body style="font-family:Arial"><p>Zoë — 190.25</p></body></html>'


def parse(raw: bytes) -> EmailMessage:
    # What an SMTP client puts on the wire: CRLF line ends.
    message = email.message_from_bytes(raw.replace(b"\n", b"\r\n"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_render_reads_back_like_the_stdlib_message() -> None:
    raw = render(SETTINGS.mail_from, "zoe@example.com", "Order filled", TEXT, HTML, "exec:k1")
    assert raw is not None
    ours = parse(raw)
    theirs = parse(
        build_message(SETTINGS, "zoe@example.com", "Order filled", TEXT, HTML, "k").as_bytes()
    )
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for header in ("From", "To", "Subject"):
        assert ours[header] == theirs[header]
    assert ours["X-BrokerX-Key"] == "exec:k1"
    assert ours["Message-ID"].endswith("@brokerx.local>")
    assert ours["Date"]
    assert body(ours, "plain") == body(theirs, "plain") == TEXT
    assert body(ours, "html").rstrip("\n") == body(theirs, "html").rstrip("\n") == HTML
    assert max(len(line) for line in raw.split(b"\n")) <= 76
    assert raw.isascii()


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        ("zoe@example.com", "Ordre exécuté"),  # non-ASCII subject: needs RFC 2047
        ("zoe@example.com", "Filled\r\nBcc: victim@example.com"),  # header injection
        ("zoé@exemple.fr", "Order filled"),  # internationalised address
        ("zoe@example.com", "x" * 1000),  # over-long header line
    ],
)
def test_render_leaves_headers_that_need_encoding_to_the_stdlib(to: str, subject: str) -> None:
    assert render(SETTINGS.mail_from, to, subject, TEXT, HTML, "k") is None
