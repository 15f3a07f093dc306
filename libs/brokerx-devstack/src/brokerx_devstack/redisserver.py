"""A throwaway Redis under `<data_dir>/redis`, on 127.0.0.1, without persistence.

Redis is transport only (DESIGN.md): nothing in it needs to survive a restart, so the
server runs with no RDB snapshots and no AOF. It daemonizes itself (like pg_ctl's
postmaster) so `servers` can leave it running; its PID is recorded with its start time.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from brokerx_devstack.binaries import Prefer, RedisBinary, find_redis
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.procs import LOCALHOST, ProcessRecord, pick_port, stop_trees

DEFAULT_PORT = 56379
START_TIMEOUT_SECONDS = 15


@dataclass(frozen=True)
class RunningRedis:
    record: ProcessRecord
    port: int
    binary: RedisBinary | None
    started: bool

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"


def redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def redis_command(binary: Path, port: int, directory: Path) -> list[str]:
    """argv of a daemonized, non-persistent redis-server on 127.0.0.1:`port`."""
    return [
        str(binary),
        "--bind",
        LOCALHOST,
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--daemonize",
        "yes",
        "--pidfile",
        str(directory / "redis.pid"),
        "--logfile",
        str(directory / "redis.log"),
    ]


def ping(port: int, host: str = LOCALHOST, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def running_server(directory: Path) -> ProcessRecord | None:
    """The redis-server whose pidfile is in `directory`, if that process still runs.

    Redis chdirs to its `--dir`: checking the working directory tells it from an
    unrelated process that got the same PID after a crash.
    """
    pid = _read_pid(directory / "redis.pid")
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if "redis" not in proc.name() or Path(proc.cwd()) != directory.resolve():
            return None
    except psutil.Error:
        return None
    record = ProcessRecord.of(pid, "redis-server")
    return record if record is not None and record.is_running() else None


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(binary: RedisBinary, port: int, directory: Path) -> ProcessRecord | None:
    pid_file = directory / "redis.pid"
    pid_file.unlink(missing_ok=True)
    with (directory / "redis.log").open("ab") as log:
        subprocess.run(
            redis_command(binary.path, port, directory),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        pid = _read_pid(pid_file)
        record = ProcessRecord.of(pid, "redis-server") if pid else None
        if record is not None and ping(port):
            return record
        if pid is not None and record is None:  # the daemon exited (e.g. port taken)
            return None
        time.sleep(0.05)
    return None


def ensure_redis(
    data_dir: Path, prefer: Prefer, *, port: int | None = None, last_port: int | None = None
) -> RunningRedis:
    """Reuse the server of `data_dir` if it still answers on `last_port`, else start one."""
    directory = redis_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    current = running_server(directory)
    if current is not None:
        if last_port is not None and ping(last_port):
            return RunningRedis(current, last_port, None, started=False)
        stop_redis(data_dir)  # running but not where we expect it: start afresh
    binary = find_redis(prefer)
    chosen = pick_port(port, last_port, DEFAULT_PORT)
    for attempt in range(2):
        record = _start(binary, chosen, directory)
        if record is not None:
            return RunningRedis(record, chosen, binary, started=True)
        if attempt == 0:  # most likely lost a race for the port: try another one
            chosen = pick_port(None)
    raise DevstackError(
        f"Redis did not start ({binary.describe()}); {directory / 'redis.log'}:\n"
        + _tail(directory / "redis.log")
    )


def stop_redis(data_dir: Path, timeout: float = 10) -> bool:
    """Stop the server of `data_dir` (SIGTERM, then SIGKILL); True if it was running."""
    record = running_server(redis_dir(data_dir))
    proc = record.process() if record is not None else None
    if proc is None:
        return False
    stop_trees([proc], timeout=timeout, first_signal=signal.SIGTERM)
    return True
