"""Helpers of the end-to-end tests: the launcher as a real process, on free ports.

The launcher runs in its own session, as under a terminal, so a test can send SIGINT
to its process group exactly as Ctrl-C would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from brokerx_devstack.procs import free_ports_for
from brokerx_devstack.servers import stop_servers, wipe_data_dir
from tests.support.polling import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "matching", "worker")
# Variables that would make the launcher use existing servers instead of starting its own.
_SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE")


def fresh_machine_env(**extra: str) -> dict[str, str]:
    """Our environment minus any server addresses: what a fresh machine has."""
    env = {key: value for key, value in os.environ.items() if key not in _SERVER_VARIABLES}
    env.update(extra)
    return env


def alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (a zombie has exited; only its PID entry remains)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def public_data_dir() -> Iterator[Path]:
    """A data dir the unprivileged PostgreSQL account can reach (pytest's tmp dirs are 0700)."""
    parent = Path(tempfile.mkdtemp(prefix="brokerx-devstack-"))
    parent.chmod(0o755)
    data_dir = parent / "data"
    yield data_dir
    stop_servers(data_dir)  # only does something when a test failed half-way
    wipe_data_dir(data_dir)
    wipe_data_dir(parent)


@dataclass
class Launcher:
    """`python -m brokerx_devstack run` in its own session, with its output in a file."""

    data_dir: Path
    log_path: Path
    ports: dict[str, int] = field(default_factory=lambda: free_ports_for(*SERVICES, "smtp"))
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str], *extra_args: str) -> None:
        command = [
            sys.executable,
            "-m",
            "brokerx_devstack",
            "run",
            "--data-dir",
            str(self.data_dir),
            "--api-port",
            str(self.ports["api"]),
            "--matching-port",
            str(self.ports["matching"]),
            "--worker-port",
            str(self.ports["worker"]),
            "--smtp-port",
            str(self.ports["smtp"]),
            *extra_args,
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.data_dir / "devstack.json").read_text())
        return data

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        """Poll the three /health until all answer 200 (fails early if the launcher exits)."""
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:

            async def statuses() -> dict[str, int | str]:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"launcher exited with {self.process.returncode}:\n{self.output()}"
                    )
                found: dict[str, int | str] = {}
                for service in SERVICES:
                    try:
                        response = await client.get(self.url(service, "/health"))
                        found[service] = response.status_code
                    except httpx.HTTPError as error:
                        found[service] = type(error).__name__
                return found

            await eventually(
                statuses,
                lambda found: all(code == 200 for code in found.values()),
                timeout=timeout,
                interval=0.25,
                message="the three /health endpoints did not all answer 200",
            )

    def process_tree(self) -> list[psutil.Process]:
        """The launcher, everything it spawned, and the servers it runs (with children)."""
        launcher = psutil.Process(self.pid)
        procs = [launcher, *launcher.children(recursive=True)]
        state = self.state()
        for server in ("postgres", "redis"):
            server_proc = psutil.Process(state[server]["pid"])
            procs += [server_proc, *server_proc.children(recursive=True)]
        return procs

    async def interrupt(self, timeout: float = 30.0) -> int:
        """Ctrl-C as a terminal sends it (SIGINT to the process group); the exit code."""
        assert self.process is not None
        os.killpg(self.pid, signal.SIGINT)
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill(self) -> None:
        """Last-resort cleanup after a failed test: the whole session, then the servers."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(10)
        subprocess.run(
            [sys.executable, "-m", "brokerx_devstack", "stop", "--data-dir", str(self.data_dir)],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def launcher(public_data_dir: Path, tmp_path: Path) -> Iterator[Launcher]:
    """A launcher on free ports (not started); killed with its servers at teardown."""
    started = Launcher(public_data_dir, tmp_path / "launcher.log")
    yield started
    started.kill()
