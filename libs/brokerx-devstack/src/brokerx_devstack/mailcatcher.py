"""A local SMTP server that keeps every mail as a `.eml` file (`make run`'s outbox).

`python -m brokerx_devstack.mailcatcher --dir .devdata/run/mail --port 1025` accepts
any message on 127.0.0.1, writes it to `<dir>/<UTC time>-<n>.eml` (open it with any
mail client, or read it: verification codes are in the plain-text part) and prints one
line per mail. Nothing is ever relayed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import itertools
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

from brokerx_devstack.procs import LOCALHOST


def mail_file_name(received_at: datetime, sequence: int) -> str:
    """`20250101T120000.123456Z-0001.eml`: sorts in arrival order."""
    return f"{received_at.strftime('%Y%m%dT%H%M%S.%fZ')}-{sequence:04d}.eml"


def summary_line(content: bytes, recipients: list[str], path: Path) -> str:
    """One line for the terminal: who the mail is for, its subject, and where it is."""
    message = email.message_from_bytes(content, policy=email.policy.default)
    subject = str(message.get("Subject", "(no subject)"))
    return f"mail | to {', '.join(recipients)} | {subject} | {path}"


class MailDirHandler:
    """aiosmtpd handler writing each message to its own file, atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sequence = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content: bytes = envelope.original_content or envelope.content
        path = self.directory / mail_file_name(datetime.now(UTC), next(self._sequence))
        await asyncio.to_thread(self._write, path, content)
        sys.stdout.write(summary_line(content, list(envelope.rcpt_tos), path) + "\n")
        sys.stdout.flush()
        return "250 Message accepted for delivery"

    @staticmethod
    def _write(path: Path, content: bytes) -> None:
        partial = path.with_suffix(".part")
        partial.write_bytes(content)
        partial.replace(path)  # readers never see half a message


async def serve(directory: Path, port: int, host: str = LOCALHOST) -> None:
    """Accept mail until SIGINT/SIGTERM (`directory` must exist)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    handler = MailDirHandler(directory)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="brokerx-mailcatcher", enable_SMTPUTF8=True), host, port
    )
    sys.stdout.write(f"mail | catching SMTP on {host}:{port}, writing to {directory}\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m brokerx_devstack.mailcatcher")
    parser.add_argument("--dir", type=Path, default=Path(".devdata/run/mail"))
    parser.add_argument("--host", default=LOCALHOST)
    parser.add_argument("--port", type=int, default=1025)
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.dir, args.port, args.host))


if __name__ == "__main__":
    main()
