"""The worker's multipart/alternative e-mails written straight to bytes.

The stdlib `email` package (header registry, policy folding, generator) costs about a
millisecond of CPU per message. The worker's mails are simple — ASCII headers, a UTF-8
plain-text part then an HTML part — so `render` writes them directly with the same
headers and structure as `build_message`, each part quoted-printable. The boundary
starts with `=_`, which quoted-printable content can never contain.

A header that is not plain ASCII, holds a line break or is very long makes `render`
return None: the caller then uses `build_message`, which encodes and folds it properly.
"""

from __future__ import annotations

import binascii
import uuid
from email.utils import formatdate, make_msgid

_MAX_HEADER_CHARS = 900  # RFC 5322 allows 998 per line: leave room for the name


def _plain_header(value: str) -> bool:
    return (
        value.isascii()
        and value.isprintable()  # no CR, LF or other control character
        and len(value) <= _MAX_HEADER_CHARS
    )


def _quoted_printable(body: str) -> bytes:
    """UTF-8, quoted-printable, soft-wrapped at 76 characters, `\\n` line ends."""
    data = body.encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    return binascii.b2a_qp(data, istext=True)


def render(mail_from: str, to: str, subject: str, text: str, html: str, key: str) -> bytes | None:
    """The message as bytes (`\\n` line ends; SMTP clients send CRLF), or None when a
    header needs the stdlib's encoding."""
    if not all(_plain_header(value) for value in (mail_from, to, subject, key)):
        return None
    boundary = f"=_brokerx_{uuid.uuid4().hex}"
    head = (
        f"From: {mail_from}\n"
        f"To: {to}\n"
        f"Subject: {subject}\n"
        f"Date: {formatdate(usegmt=True)}\n"
        f"Message-ID: {make_msgid(domain='brokerx.local')}\n"
        f"X-BrokerX-Key: {key}\n"
        "MIME-Version: 1.0\n"
        f'Content-Type: multipart/alternative;\n boundary="{boundary}"\n'
        "\n"
        f"--{boundary}\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
    )
    # The line break before a boundary belongs to the boundary: one more ends the part.
    middle = (
        f"\n--{boundary}\n"
        'Content-Type: text/html; charset="utf-8"\n'
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
    )
    return b"".join(
        (
            head.encode("ascii"),
            _quoted_printable(text),
            middle.encode("ascii"),
            _quoted_printable(html),
            f"\n--{boundary}--\n".encode("ascii"),
        )
    )
