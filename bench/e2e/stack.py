"""The whole system for a benchmark: `python -m brokerx_devstack run` as a subprocess.

It runs with the market maker off, in its own data dir (wiped first), on free ports,
with JSON logs at INFO as in production (its output goes to `<data_dir>.log`). The
environment sets what docker-compose sets on the 2-core VM (2 api workers, 1 symbol
shard) and what a benchmark needs: long-lived access tokens and login throttles that let
hundreds of clients log in from one address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from brokerx_devstack.procs import free_ports_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("api", "matching", "worker")
BENCH_ENV = {
    # As docker-compose runs it on the 2-core VM (override either in the environment).
    "API_WORKERS": os.environ.get("API_WORKERS", "2"),
    "MATCHING_SHARDS": os.environ.get("MATCHING_SHARDS", "1"),
    "ACCESS_TOKEN_TTL_SECONDS": "7200",
    "RATE_LIMIT_LOGIN_IP_PER_MINUTE": "100000",
    "RATE_LIMIT_LOGIN_ACCOUNT_PER_MINUTE": "1000",
    "RATE_LIMIT_SIGNUP_PER_MINUTE": "100000",
}
_SERVER_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DATABASE_PASSWORD", "DATABASE_PASSWORD_FILE")


def stack_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment without server addresses (the stack starts its own) plus BENCH_ENV."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVER_VARIABLES}
    env.update(BENCH_ENV)
    env.update(extra or {})
    return env


@dataclass
class DevStack:
    data_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=lambda: free_ports_for(*SERVICES, "smtp"))
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir.with_suffix(".log")

    @property
    def api_port(self) -> int:
        return self.ports["api"]

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def start(self, timeout: float = 120.0) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "brokerx_devstack", "run",
            "--data-dir", str(self.data_dir),
            "--fresh", "--no-market-maker", "--log-json", "--log-level", "INFO",
            "--api-port", str(self.ports["api"]),
            "--matching-port", str(self.ports["matching"]),
            "--worker-port", str(self.ports["worker"]),
            "--smtp-port", str(self.ports["smtp"]),
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=stack_env(self.extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C of the bench reaches it only through stop()
            )
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"the launcher exited ({self.process.returncode}); see {self.log_path}"
                    )
                codes = []
                for name in SERVICES:
                    try:
                        port = self.ports[name]
                        codes.append(client.get(f"http://127.0.0.1:{port}/health").status_code)
                    except httpx.HTTPError:
                        codes.append(0)
                if all(code == 200 for code in codes):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stack not healthy after {timeout}s: {codes}")
                time.sleep(0.25)

    def state(self) -> dict[str, object]:
        data: dict[str, object] = json.loads((self.data_dir / "devstack.json").read_text())
        return data

    @property
    def database_url(self) -> str:
        port = self.state()["postgres"]["port"]  # type: ignore[index]
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/brokerx"

    @property
    def redis_url(self) -> str:
        port = self.state()["redis"]["port"]  # type: ignore[index]
        return f"redis://127.0.0.1:{port}/0"

    def pid_of(self, name: str) -> list[int]:
        """PIDs of a service (api, matching, worker) or server (postgres, redis)."""
        try:
            state = self.state()
        except (OSError, ValueError):
            return []
        if name in ("postgres", "redis"):
            entry = state.get(name)
        else:
            entry = state.get("services", {}).get(name)  # type: ignore[attr-defined]
        return [int(entry["pid"])] if isinstance(entry, dict) and "pid" in entry else []

    def stop(self, timeout: float = 60.0) -> int | None:
        """Ctrl-C as a terminal sends it; the launcher stops everything in order."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
                subprocess.run(
                    [sys.executable, "-m", "brokerx_devstack", "stop", "--data-dir",
                     str(self.data_dir)],
                    cwd=REPO_ROOT, capture_output=True, timeout=120, check=False,
                )  # fmt: skip
        return self.process.returncode
