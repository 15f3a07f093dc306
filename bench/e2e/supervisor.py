"""The system as separate processes we own, for fault injection (`make chaos`).

The launcher stops everything when a child dies, so chaos starts the pieces itself:
PostgreSQL and Redis through `brokerx_devstack.servers.ensure_servers` (under their own
data dir), the mail catcher, two api processes on two ports, matching and worker —
each with the environment the launcher would give it (`brokerx_devstack.children`).
Every process is started by us, identified by its PID, and stopped by PID.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from bench.e2e.stack import stack_env
from brokerx_devstack.children import (
    SERVICES,
    StackSettings,
    mailcatcher_command,
    service_command,
    service_env,
)
from brokerx_devstack.procs import accepts_connections, free_ports
from brokerx_devstack.servers import Servers, ensure_servers, stop_servers, wipe_data_dir

SPECS = {spec.name: spec for spec in SERVICES}
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(parent: int) -> None:  # in the child, between fork and exec
    """SIGKILL us when the chaos run dies, whatever kills it: nothing outlives it."""
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


def _die_with_us() -> functools.partial[None]:
    return functools.partial(_die_with, os.getpid())


@dataclass
class Service:
    """One service process: (re)started, SIGKILLed, stopped, by PID."""

    name: str  # "api-1", "api-2", "matching", "worker"
    kind: str  # the ServiceSpec name
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                service_command(SPECS[self.kind]),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_die_with_us(),
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def healthy(self) -> bool:
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200


@dataclass
class Cluster:
    root: Path
    servers: Servers | None = None
    services: dict[str, Service] = field(default_factory=dict)
    mailcatcher: subprocess.Popen[bytes] | None = None
    smtp_port: int = 0
    # (wall time, service, exit code) of every service that exited by itself
    crashes: list[tuple[float, str, int]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        assert self.servers is not None
        return str(self.servers.database_url)

    @property
    def redis_url(self) -> str:
        assert self.servers is not None
        return str(self.servers.redis_url)

    @property
    def api_ports(self) -> list[int]:
        return [s.port for name, s in sorted(self.services.items()) if s.kind == "api"]

    def start_servers(self) -> None:
        stop_servers(self.root)
        wipe_data_dir(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.servers = ensure_servers(self.root, environ=stack_env())
        from brokerx_core.migrate import upgrade

        upgrade(self.database_url)
        asyncio.run(_seed(self.database_url))

    def start_services(self, api_processes: int = 2) -> None:
        assert self.servers is not None
        # Distinct ports for everything at once (see `free_ports`).
        picked = free_ports(3 + api_processes)
        self.smtp_port = picked.pop()
        with (self.root / "mailcatcher.log").open("ab") as log:
            self.mailcatcher = subprocess.Popen(
                mailcatcher_command(self.root / "mail", self.smtp_port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=_die_with_us(),
            )
        ports = {"api": picked.pop(), "matching": picked.pop(), "worker": picked.pop()}
        stack = StackSettings(
            database_url=self.database_url,
            redis_url=self.redis_url,
            ports=ports,
            smtp_port=self.smtp_port,
            data_dir=self.root,
            market_maker=False,
            log_json=True,
            log_level="INFO",
            postgres_bin_dir=self.servers.postgres_bin_dir,
        )
        base = stack_env()
        for index in range(api_processes):
            port = ports["api"] if index == 0 else picked.pop()
            env = service_env(base, SPECS["api"], stack)
            env["API_PORT"] = str(port)
            self._add(Service(f"api-{index + 1}", "api", port, env, self._log(f"api-{index + 1}")))
        for kind in ("matching", "worker"):
            env = service_env(base, SPECS[kind], stack)
            self._add(Service(kind, kind, ports[kind], env, self._log(kind)))
        for service in self.services.values():
            service.start()
        self.wait_healthy(list(self.services), 90)

    def _log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def _add(self, service: Service) -> None:
        self.services[service.name] = service

    def wait_healthy(self, names: list[str], timeout: float) -> float:
        """Seconds until every named service answers /health 200 (raises after timeout)."""
        started = time.monotonic()
        pending = set(names)
        while pending:
            pending = {name for name in pending if not self.services[name].healthy()}
            if not pending:
                break
            for name in pending:
                process = self.services[name].process
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited ({process.returncode}); see its log")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not healthy after {timeout}s: {sorted(pending)}")
            time.sleep(0.1)
        return time.monotonic() - started

    def wait_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not accepts_connections(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port} after {timeout}s")
            time.sleep(0.05)

    def restart_crashed(self) -> list[str]:
        """A restart policy (compose's `restart: unless-stopped`): start again every
        service that exited by itself; the crash is recorded."""
        restarted = []
        for name, service in self.services.items():
            process = service.process
            if process is not None and process.poll() is not None:
                self.crashes.append((time.time(), name, int(process.returncode)))
                service.start()
                restarted.append(name)
        return restarted

    def pids(self, name: str) -> list[int]:
        if name in self.services:
            pid = self.services[name].pid
            return [pid] if pid else []
        if self.servers is None:
            return []
        if name == "postgres" and self.servers.postgres is not None:
            return [self.servers.postgres.pid]
        if name == "redis" and self.servers.redis is not None:
            return [self.servers.redis.record.pid]
        return []

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        if self.mailcatcher is not None and self.mailcatcher.poll() is None:
            self.mailcatcher.terminate()
            self.mailcatcher.wait(10)
        stop_servers(self.root)


async def _seed(url: str) -> None:
    from brokerx_core.seed import seed

    engine = create_async_engine(url, pool_size=1)
    try:
        await seed(engine, market_maker=False)
    finally:
        await engine.dispose()
