"""`brokerx-devstack run`: servers, migrations, seed, the three services, until Ctrl-C.

Everything started is recorded in `<data_dir>/devstack.json` (PID and start time) and
stopped by PID on the way out: services first (SIGTERM, SIGKILL after a timeout),
then the mail catcher, Redis and PostgreSQL. A child that dies on its own brings the
whole stack down with a non-zero exit, so a broken service is never silently missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx
import psutil

from brokerx_devstack.children import (
    SERVICES,
    StackSettings,
    mailcatcher_command,
    service_command,
    service_env,
    spawn,
)
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.procs import (
    LOCALHOST,
    ProcessRecord,
    accepts_connections,
    alive,
    group_orphans,
    pick_port,
    port_is_free,
    stop_trees,
)
from brokerx_devstack.servers import Servers, ensure_servers, stop_servers, wipe_data_dir
from brokerx_devstack.state import load_state, update_state

MAILCATCHER = "mailcatcher"


class Stop(BaseException):
    """SIGINT/SIGTERM: unwind whatever is running and shut down (exit 0)."""


class ChildDied(Exception):
    def __init__(self, name: str, code: int | None) -> None:
        super().__init__(f"{name} exited unexpectedly (exit code {code})")


@dataclass(frozen=True)
class Options:
    data_dir: Path = Path(".devdata/run")
    api_port: int = 3000
    matching_port: int = 8001
    worker_port: int = 8002
    smtp_port: int = 1025
    market_maker: bool = True
    log_json: bool = False
    log_level: str = "INFO"
    api_workers: int = 1
    fresh: bool = False
    prefer: str | None = None
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0

    @property
    def ports(self) -> dict[str, int]:
        return {"api": self.api_port, "matching": self.matching_port, "worker": self.worker_port}


def health_urls(ports: dict[str, int]) -> dict[str, str]:
    return {name: f"http://{LOCALHOST}:{port}/health" for name, port in ports.items()}


def _workers(count: int) -> str:
    return "1 api process" if count == 1 else f"{count} api worker processes"


def banner(options: Options, servers: Servers, smtp_port: int) -> str:
    """What a developer needs once everything is up."""
    api = f"http://{LOCALHOST}:{options.api_port}"
    ops = [
        f"http://{LOCALHOST}:{options.matching_port}",
        f"http://{LOCALHOST}:{options.worker_port}",
    ]
    mail_dir = options.data_dir / "mail"
    return "\n".join(
        [
            "",
            "BrokerX is running.",
            f"  API docs    {api}/docs   ({_workers(options.api_workers)})",
            f"  health      {api}/health   {ops[0]}/health   {ops[1]}/health",
            f"  metrics     {api}/metrics   {ops[0]}/metrics   {ops[1]}/metrics",
            f"  e-mails     {mail_dir}/*.eml  (SMTP catcher on {LOCALHOST}:{smtp_port})",
            f"  PostgreSQL  {servers.database_url}",
            f"  Redis       {servers.redis_url}",
            f"  data        {options.data_dir}",
            "Press Ctrl-C to stop everything.",
            "",
        ]
    )


def stop_recorded(data_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop services a killed launcher left behind (as recorded in the state file)."""
    recorded = load_state(data_dir).get("services", {})
    procs = {}
    for name, data in recorded.items():
        record = ProcessRecord.from_json(data)
        proc = record.process() if record else None
        if proc is not None:
            procs[name] = proc
    stop_trees(procs.values(), timeout=timeout)
    update_state(data_dir, services=None)
    return sorted(procs)


def stop_everything(data_dir: Path, timeout: float = 10.0) -> list[str]:
    """`brokerx-devstack stop`: a running launcher, leftover services, then the servers."""
    data_dir = data_dir.absolute()
    if not data_dir.is_dir():
        return []
    stopped = []
    launcher = ProcessRecord.from_json(load_state(data_dir).get("launcher"))
    proc = launcher.process() if launcher else None
    if proc is not None and proc.pid != os.getpid():
        proc.send_signal(signal.SIGTERM)  # it stops its own children in order
        try:
            proc.wait(timeout=timeout * 3 + 30)
        except psutil.TimeoutExpired:
            stop_trees([proc], timeout=0, first_signal=signal.SIGKILL)
        stopped.append(f"launcher (pid {proc.pid})")
    stopped += stop_recorded(data_dir, timeout)
    stopped += stop_servers(data_dir)
    update_state(data_dir, launcher=None)
    return stopped


@dataclass
class Launcher:
    options: Options
    out: TextIO = field(default_factory=lambda: sys.stdout)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    servers: Servers | None = None
    _stop_requested_at: float = float("-inf")

    def say(self, message: str) -> None:
        self.out.write(f"devstack | {message}\n")
        self.out.flush()

    # --- lifecycle -------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait for Ctrl-C/SIGTERM or a dying child; 0 only on a signal."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        code = 1
        try:
            self._start()
            self._watch()
        except Stop as stop:
            self.say(f"{stop}: stopping everything")
            code = 0
        except ChildDied as died:
            self.say(f"{died}: stopping everything")
        except DevstackError as error:
            self.say(f"error: {error}")
        finally:
            for sig in previous:
                signal.signal(sig, self._on_signal_while_stopping)
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested_at = time.monotonic()
        raise Stop(signal.Signals(signum).name)

    def _on_signal_while_stopping(self, signum: int, frame: FrameType | None) -> None:
        # `uv run` forwards the terminal's Ctrl-C, so one arrives twice: say nothing then.
        if time.monotonic() - self._stop_requested_at > 2:
            self.say(f"{signal.Signals(signum).name} received: already stopping")

    def _start(self) -> None:
        options = self.options
        data_dir = options.data_dir
        if options.fresh:
            self.say(f"--fresh: stopping leftovers and wiping {data_dir}")
            stop_everything(data_dir, options.stop_timeout)
            wipe_data_dir(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._claim_data_dir()
        for name, port in options.ports.items():
            if not port_is_free(port):
                raise DevstackError(
                    f"port {port} for the {name} is taken (another BrokerX running?):"
                    f" choose another with --{name}-port"
                )
        self.servers = ensure_servers(data_dir, prefer=options.prefer)
        for note in self.servers.notes:
            self.say(note)
        self._migrate_and_seed(self.servers.database_url)
        smtp_port = self._start_mailcatcher()
        stack = StackSettings(
            database_url=self.servers.database_url,
            redis_url=self.servers.redis_url,
            ports=options.ports,
            smtp_port=smtp_port,
            data_dir=data_dir,
            market_maker=options.market_maker,
            log_json=options.log_json,
            log_level=options.log_level,
            postgres_bin_dir=self.servers.postgres_bin_dir,
            api_workers=options.api_workers,
        )
        for service in SERVICES:
            self._spawn(
                service.name, service_command(service), service_env(os.environ, service, stack)
            )
        self._wait_until_healthy()
        self.out.write(banner(options, self.servers, smtp_port) + "\n")
        self.out.flush()

    def _claim_data_dir(self) -> None:
        data_dir = self.options.data_dir
        other = ProcessRecord.from_json(load_state(data_dir).get("launcher"))
        if other is not None and other.is_running() and other.pid != os.getpid():
            raise DevstackError(
                f"another brokerx-devstack (pid {other.pid}) is running on {data_dir}:"
                f" stop it first (Ctrl-C, or `brokerx-devstack stop --data-dir {data_dir}`)"
            )
        leftovers = stop_recorded(data_dir, self.options.stop_timeout)
        if leftovers:
            self.say(f"stopped leftovers of an earlier run: {', '.join(leftovers)}")
        me = ProcessRecord.of(os.getpid(), "brokerx-devstack")
        update_state(data_dir, launcher=me.to_json() if me else None)

    def _migrate_and_seed(self, database_url: str) -> None:
        from brokerx_core.migrate import upgrade
        from brokerx_core.settings import BrokerXSettings

        # The settings merge DATABASE_PASSWORD(_FILE) into the URL, as the services do.
        url = BrokerXSettings(database_url=database_url).sqlalchemy_url
        self.say("migrating the database")
        upgrade(url)
        what = "instruments and the market maker" if self.options.market_maker else "instruments"
        self.say(f"seeding {what}")
        asyncio.run(_seed(url, market_maker=self.options.market_maker))

    def _start_mailcatcher(self) -> int:
        port = pick_port(self.options.smtp_port)  # internal: any free port will do
        command = mailcatcher_command(self.options.data_dir / "mail", port)
        self._spawn(MAILCATCHER, command, {**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 15
        while not accepts_connections(port):
            self._check_children()
            if time.monotonic() > deadline:
                raise DevstackError(f"the mail catcher does not accept connections on {port}")
            time.sleep(0.05)
        return port

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.children[name] = child = spawn(command, env)
        recorded = load_state(self.options.data_dir).get("services", {})
        record = ProcessRecord.of(child.pid, name)
        if record is not None:
            update_state(self.options.data_dir, services={**recorded, name: record.to_json()})

    def _check_children(self) -> None:
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                raise ChildDied(name, code)

    def _wait_until_healthy(self) -> None:
        urls = health_urls(self.options.ports)
        self.say("waiting for " + ", ".join(urls.values()))
        last: dict[str, str] = dict.fromkeys(urls, "no answer yet")
        deadline = time.monotonic() + self.options.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                self._check_children()
                for name, url in urls.items():
                    if last[name] == "ok":
                        continue
                    try:
                        response = client.get(url)
                    except httpx.HTTPError as error:
                        last[name] = f"no answer ({type(error).__name__})"
                        continue
                    last[name] = "ok" if response.status_code == 200 else response.text[:300]
                if all(value == "ok" for value in last.values()):
                    return
                if time.monotonic() > deadline:
                    report = "; ".join(f"{name}: {value}" for name, value in last.items())
                    raise DevstackError(
                        f"not healthy after {self.options.startup_timeout:.0f}s: {report}"
                    )
                time.sleep(0.25)

    def _watch(self) -> None:
        while True:
            self._check_children()
            time.sleep(0.25)

    # --- shutdown --------------------------------------------------------------------

    def _stop_children(self, names: list[str]) -> None:
        procs = []
        for name in names:
            child = self.children.get(name)
            if child is None:
                continue
            if child.poll() is not None:
                # Its leader is gone, but what it spawned into its group may not be
                # (the api's workers after their master was killed).
                procs += group_orphans(child.pid)
                continue
            try:
                procs.append(psutil.Process(child.pid))
            except psutil.Error:
                continue
        left = stop_trees(procs, timeout=self.options.stop_timeout)
        for proc in left:
            self.say(f"could not stop pid {proc.pid}")
        for name in names:
            child = self.children.pop(name, None)
            if child is not None:
                try:
                    child.wait(timeout=5)  # reap, so no zombie outlives us
                except subprocess.TimeoutExpired:
                    self.say(f"{name} (pid {child.pid}) did not exit")

    def _shutdown(self) -> None:
        data_dir = self.options.data_dir
        services = [name for name in self.children if name != MAILCATCHER]
        if services:
            self.say("stopping " + ", ".join(services))
        self._stop_children(services)
        self._stop_children([MAILCATCHER])
        update_state(data_dir, services=None)
        # Servers from DATABASE_URL/REDIS_URL are not ours; those under the data dir are,
        # even when reused, and even when their start was interrupted.
        stopped = stop_servers(
            data_dir,
            postgres=not os.environ.get("DATABASE_URL"),
            redis=not os.environ.get("REDIS_URL"),
        )
        if stopped:
            self.say("stopped " + " and ".join(stopped))
        # Anything else we spawned (a child whose Popen was interrupted by the signal).
        stray = [proc for proc in psutil.Process().children(recursive=True) if alive(proc)]
        stop_trees(stray, timeout=self.options.stop_timeout)
        update_state(data_dir, launcher=None)
        self.say("stopped")


async def _seed(url: str, *, market_maker: bool) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from brokerx_core.seed import seed

    engine = create_async_engine(url, pool_size=1)
    try:
        await seed(engine, market_maker=market_maker)
    finally:
        await engine.dispose()


def run(options: Options) -> int:
    """Run the stack in the foreground; the process exit code."""
    launcher = Launcher(dataclasses.replace(options, data_dir=options.data_dir.absolute()))
    try:
        return launcher.run()
    except Stop:  # a signal in the instant between an error and the shutdown: still clean
        return 0
