"""Shared helpers of the infrastructure tests (compose, images, nginx, backups, deploy).

These tests drive the real tools (docker-compose config, nginx, promtool, pg_dump,
sshd). `infra/ci/install-system-deps.sh` installs them; a test skips only when its
binary is truly missing.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def require_binary(name: str, *fallbacks: str) -> str:
    """Absolute path of a system binary, or skip the test."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if Path(candidate).is_file():
            return candidate
    pytest.skip(f"{name} is not installed (infra/ci/install-system-deps.sh installs it)")
