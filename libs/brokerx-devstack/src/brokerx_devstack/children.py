"""The processes `run` starts: the three services and the mail catcher.

Each child gets its own process group, so the terminal's Ctrl-C reaches only the
launcher, which then stops them in order; and each asks the kernel for SIGTERM when the
launcher dies (PR_SET_PDEATHSIG), so even `kill -9` of the launcher leaves no service.
With `--api-workers N` (N > 1) the api is a uvicorn master with N worker processes in
its process group: stopping the group stops them all, and a worker whose master is
gone exits by itself.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brokerx_core.observability.multiprocess import MULTIPROC_ENV
from brokerx_devstack.procs import LOCALHOST

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


@dataclass(frozen=True)
class ServiceSpec:
    """A BrokerX service: its name, module and the variable holding its HTTP port."""

    name: str
    module: str
    port_variable: str


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("api", "brokerx_api", "API_PORT"),
    ServiceSpec("matching", "brokerx_matching", "OPS_PORT"),
    ServiceSpec("worker", "brokerx_worker", "OPS_PORT"),
)


@dataclass(frozen=True)
class StackSettings:
    """What every service is told about the rest of the stack."""

    database_url: str
    redis_url: str
    ports: Mapping[str, int]  # service name -> HTTP port (api, matching, worker)
    smtp_port: int
    data_dir: Path
    market_maker: bool = True
    log_json: bool = False
    log_level: str = "INFO"
    postgres_bin_dir: Path | None = None
    api_workers: int = 1

    @property
    def api_metrics_dir(self) -> Path:
        """Prometheus multiprocess files of the api's workers (emptied at each api start)."""
        return self.data_dir / "api-metrics"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def service_env(
    base: Mapping[str, str], service: ServiceSpec, stack: StackSettings
) -> dict[str, str]:
    """The environment of one service: `base` plus the stack's addresses and switches."""
    env = dict(base)
    env.update(
        {
            "DATABASE_URL": stack.database_url,
            "REDIS_URL": stack.redis_url,
            service.port_variable: str(stack.ports[service.name]),
            "MARKET_MAKER_ENABLED": _flag(stack.market_maker),
            "SMTP_HOST": LOCALHOST,
            "SMTP_PORT": str(stack.smtp_port),
            "PUBLIC_URL": f"http://{LOCALHOST}:{stack.ports['api']}",
            "BACKUP_DIR": str(stack.data_dir / "backups"),
            "LOG_JSON": _flag(stack.log_json),
            "LOG_LEVEL": stack.log_level,
            "PYTHONUNBUFFERED": "1",  # log lines reach the terminal as they happen
        }
    )
    # Only the api may run in Prometheus multiprocess mode, in a directory of its own:
    # another service writing there would show up in the api's /metrics.
    env.pop(MULTIPROC_ENV, None)
    if service.name == "api":
        env["API_WORKERS"] = str(stack.api_workers)
        if stack.api_workers > 1:
            env[MULTIPROC_ENV] = str(stack.api_metrics_dir)
    if stack.postgres_bin_dir is not None:
        # The worker's backups call pg_dump: use the one matching the server's version.
        env["PATH"] = os.pathsep.join(filter(None, [str(stack.postgres_bin_dir), env.get("PATH")]))
    return env


def service_command(service: ServiceSpec) -> list[str]:
    """`python -m <module>` with the launcher's own interpreter (same virtualenv)."""
    return [sys.executable, "-m", service.module]


def mailcatcher_command(directory: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "brokerx_devstack.mailcatcher",
        "--dir",
        str(directory),
        "--port",
        str(port),
    ]


def _die_with_parent(parent: int) -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def spawn(command: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start a child in its own process group that gets SIGTERM if we die."""
    return subprocess.Popen(
        command,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        process_group=0,
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),
    )
