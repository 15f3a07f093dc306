"""A throwaway PostgreSQL cluster under `<data_dir>/postgres`, on 127.0.0.1 only.

Layout: `data/` (PGDATA, created by initdb with trust auth), `socket/` (unix socket),
`postgres.log`. The port and listen address live in `data/devstack.conf`, included
from postgresql.conf, so a restart may move to another port. As root the cluster
belongs to an unprivileged account (see `account`); when that account cannot reach
the data dir (a checkout under /root), the cluster lives under /var/lib/brokerx-devstack
(see `placement`) and `<data_dir>/postgres` is a symlink to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from brokerx_devstack.account import Account, popen_kwargs, postgres_account
from brokerx_devstack.binaries import PostgresBinaries, Prefer, find_postgres
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.pgconf import conf_text, extra_settings
from brokerx_devstack.placement import prepare_root, reachable_binaries
from brokerx_devstack.procs import LOCALHOST, pick_port, stop_trees, wait_gone

SUPERUSER = "postgres"
DATABASE = "brokerx"
DEFAULT_PORT = 55432
CONF_NAME = "devstack.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'  # written by brokerx-devstack\n"
START_TIMEOUT_SECONDS = 60
# Environment of every PostgreSQL tool: the C locale exists on every machine.
_PG_ENV = {"LC_ALL": "C", "LANG": "C", "PGTZ": "UTC"}


@dataclass(frozen=True)
class Layout:
    """Where the cluster's files live (`root` may be a symlink to a relocated dir)."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"


@dataclass(frozen=True)
class RunningPostgres:
    """A cluster that accepts connections."""

    pid: int
    port: int
    binaries: PostgresBinaries | None
    account: Account | None
    started: bool  # False when it was already running and we reused it

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{SUPERUSER}@{LOCALHOST}:{self.port}/{DATABASE}"


def layout(data_dir: Path) -> Layout:
    """The cluster's files, by their real path (see `placement.prepare_root`)."""
    return Layout((data_dir / "postgres").resolve())


# --- pure helpers ------------------------------------------------------------------


def initdb_command(binaries: PostgresBinaries, pgdata: Path) -> list[str]:
    return [
        binaries.tool("initdb"),
        "--pgdata",
        str(pgdata),
        "--username",
        SUPERUSER,
        "--auth",
        "trust",
        "--encoding",
        "UTF8",
        "--locale",
        "C",
        "--no-sync",
    ]


def pg_ctl_start_command(binaries: PostgresBinaries, layout: Layout) -> list[str]:
    return [
        binaries.tool("pg_ctl"),
        "start",
        "--pgdata",
        str(layout.pgdata),
        "--log",
        str(layout.log_file),
        "--wait",
        "--timeout",
        str(START_TIMEOUT_SECONDS),
        "--silent",
    ]


def pg_ctl_stop_command(binaries: PostgresBinaries, pgdata: Path, timeout: float) -> list[str]:
    return [
        binaries.tool("pg_ctl"),
        "stop",
        "--pgdata",
        str(pgdata),
        "--mode",
        "fast",
        "--wait",
        "--timeout",
        str(int(timeout)),
        "--silent",
    ]


def parse_pid_file(text: str) -> tuple[int, int] | None:
    """(pid, port) from a postmaster.pid, None when it is incomplete."""
    lines = text.splitlines()
    try:
        return int(lines[0]), int(lines[3])
    except (IndexError, ValueError):
        return None


# --- finding a running cluster ------------------------------------------------------


def running_postmaster(pgdata: Path) -> tuple[psutil.Process, int] | None:
    """The postmaster serving `pgdata` and its port, from postmaster.pid, if it runs."""
    try:
        parsed = parse_pid_file((pgdata / "postmaster.pid").read_text(encoding="utf-8"))
    except OSError:
        return None
    if parsed is None:
        return None
    pid, port = parsed
    try:
        proc = psutil.Process(pid)
        # A postmaster's working directory is its data directory: that tells our
        # postmaster from an unrelated process that got the same PID after a crash.
        if "postgres" not in proc.name() or Path(proc.cwd()) != pgdata.resolve():
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    return proc, port


def _orphans(pgdata: Path) -> list[psutil.Process]:
    """Backends of a postmaster that was killed: they keep shared memory attached."""
    found = []
    target = pgdata.resolve()
    for proc in psutil.process_iter(["name"]):
        try:
            if "postgres" in (proc.info["name"] or "") and Path(proc.cwd()) == target:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _clear_crash_leftovers(layout: Layout) -> None:
    """Remove what a killed postmaster left: orphaned backends, postmaster.pid, socket locks.

    PostgreSQL refuses to start while postmaster.pid names a live process (after a crash
    that PID may belong to anything by now) or while old backends hold shared memory.
    """
    orphans = _orphans(layout.pgdata)
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    wait_gone(orphans, 10.0)
    (layout.pgdata / "postmaster.pid").unlink(missing_ok=True)
    if layout.socket_dir.is_dir():
        for leftover in layout.socket_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)


def existing_major(pgdata: Path) -> int | None:
    """The major version of an initialised cluster (PG_VERSION), None if there is none."""
    try:
        return int((pgdata / "PG_VERSION").read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


# --- start / stop -----------------------------------------------------------------


def _run_as(
    account: Account | None, command: list[str], layout: Layout, output: Path, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    # Output goes to a file, not a pipe: pg_ctl leaves a daemon behind that must not
    # hold our pipe open. cwd is the cluster root because the tools call getcwd().
    with output.open("ab") as log:
        return subprocess.run(
            command,
            cwd=layout.root,
            env={**os.environ, **_PG_ENV},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
            **popen_kwargs(account),
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _initdb(binaries: PostgresBinaries, layout: Layout, account: Account | None) -> None:
    # initdb into a scratch dir and rename: an interrupted initdb leaves no half cluster.
    scratch = layout.root / "data.initdb"
    shutil.rmtree(scratch, ignore_errors=True)
    log = layout.root / "initdb.log"
    done = _run_as(account, initdb_command(binaries, scratch), layout, log, 120)
    if done.returncode != 0:
        raise DevstackError(f"initdb failed ({binaries.describe()}):\n{_tail(log)}")
    scratch.rename(layout.pgdata)


def _write_conf(layout: Layout, port: int, account: Account | None) -> None:
    conf = layout.pgdata / CONF_NAME
    extra = extra_settings(os.environ.get("DEVSTACK_PG_SETTINGS", ""))
    conf.write_text(conf_text(port, layout.socket_dir, extra), encoding="utf-8")
    main = layout.pgdata / "postgresql.conf"
    if INCLUDE_LINE not in main.read_text(encoding="utf-8"):
        with main.open("a", encoding="utf-8") as handle:
            handle.write("\n" + INCLUDE_LINE)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if account is not None:
        account.chown(conf)
        account.chown(layout.socket_dir)


def _psql(binaries: PostgresBinaries, port: int, sql: str) -> str:
    command = [
        binaries.tool("psql"),
        "--no-psqlrc",
        "--host",
        LOCALHOST,
        "--port",
        str(port),
        "--username",
        SUPERUSER,
        "--dbname",
        "postgres",
        "--tuples-only",
        "--no-align",
        "--command",
        sql,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **_PG_ENV, "PGCONNECT_TIMEOUT": "10"},
    )
    if done.returncode != 0:
        raise DevstackError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _create_database(binaries: PostgresBinaries, port: int) -> None:
    exists = _psql(binaries, port, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
    if exists != "1":
        _psql(binaries, port, f'CREATE DATABASE "{DATABASE}"')


def ensure_postgres(
    data_dir: Path, prefer: Prefer, *, port: int | None = None, last_port: int | None = None
) -> RunningPostgres:
    """Reuse the cluster running from `data_dir`, or create/start it; database `brokerx` exists."""
    current = layout(data_dir)
    major = existing_major(current.pgdata)
    owner = current.pgdata.stat().st_uid if major is not None else None
    account = postgres_account(owner)
    binaries = find_postgres(prefer, major=major)
    running = running_postmaster(current.pgdata)
    if running is not None:
        proc, running_port = running
        _create_database(binaries, running_port)
        return RunningPostgres(proc.pid, running_port, binaries, account, started=False)

    current = Layout(prepare_root(data_dir, account))
    binaries = reachable_binaries(binaries, account)
    if existing_major(current.pgdata) is None:
        _initdb(binaries, current, account)
    _clear_crash_leftovers(current)
    chosen = pick_port(port, last_port, DEFAULT_PORT)
    for attempt in range(2):
        _write_conf(current, chosen, account)
        done = _run_as(
            account,
            pg_ctl_start_command(binaries, current),
            current,
            current.root / "pg_ctl.log",
            START_TIMEOUT_SECONDS + 10,
        )
        started = running_postmaster(current.pgdata)
        if done.returncode == 0 and started is not None:
            proc, _ = started
            _create_database(binaries, chosen)
            return RunningPostgres(proc.pid, chosen, binaries, account, started=True)
        log = _tail(current.log_file)
        if attempt == 0 and "could not bind" in log:  # lost a race for the port: retry
            chosen = pick_port(None)
            continue
        raise DevstackError(
            f"PostgreSQL did not start ({binaries.describe()}); {current.log_file}:\n{log}"
        )
    raise AssertionError("unreachable")


def stop_postgres(
    data_dir: Path, binaries: PostgresBinaries | None = None, timeout: float = 30
) -> bool:
    """Stop the cluster of `data_dir` if it runs (`pg_ctl stop -m fast`); True if it did."""
    current = layout(data_dir)
    running = running_postmaster(current.pgdata)
    if running is None:
        return False
    proc, _ = running
    members = [proc, *proc.children(recursive=True)]
    used_pg_ctl = binaries is not None and Path(binaries.tool("pg_ctl")).exists()
    if binaries is not None and used_pg_ctl:
        owner = current.pgdata.stat().st_uid
        account = postgres_account(owner) if os.geteuid() == 0 else None
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run_as(
                account,
                pg_ctl_stop_command(binaries, current.pgdata, timeout),
                current,
                current.root / "pg_ctl.log",
                timeout + 10,
            )
    # Without pg_ctl, or when it failed: SIGINT is what `pg_ctl stop -m fast` sends,
    # then SIGKILL for whatever outlives the timeout.
    survivors = wait_gone(members, 2.0 if used_pg_ctl else 0.0)
    if survivors:
        stop_trees(survivors, timeout=timeout, first_signal=signal.SIGINT)
    deadline = time.monotonic() + 5
    while (current.pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True
