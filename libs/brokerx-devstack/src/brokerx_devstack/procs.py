"""Processes and ports: records that survive PID reuse, stopping a process tree, free ports.

A recorded process is (pid, start time): a PID alone may belong to an unrelated
process by the time `stop` reads it from disk, and we must never signal that one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

LOCALHOST = "127.0.0.1"
# psutil's start times come from /proc in clock ticks: equal for the same process.
_START_TIME_TOLERANCE = 0.5


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started, identified by PID and start time."""

    pid: int
    started_at: float
    name: str = ""

    @classmethod
    def of(cls, pid: int, name: str = "") -> ProcessRecord | None:
        """The record of a live process, None when `pid` does not exist."""
        try:
            return cls(pid, psutil.Process(pid).create_time(), name)
        except psutil.Error:
            return None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "started_at": self.started_at, "name": self.name}

    @classmethod
    def from_json(cls, data: Any) -> ProcessRecord | None:
        """Parse what `to_json` wrote; None for anything malformed."""
        try:
            return cls(int(data["pid"]), float(data["started_at"]), str(data.get("name", "")))
        except (KeyError, TypeError, ValueError):
            return None

    def process(self) -> psutil.Process | None:
        """The live process this record names (not a zombie, not a reused PID)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started_at) > _START_TIME_TOLERANCE:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return proc

    def is_running(self) -> bool:
        return self.process() is not None


def alive(proc: psutil.Process) -> bool:
    """True while `proc` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def process_tree(proc: psutil.Process) -> list[psutil.Process]:
    """`proc` and all its descendants (those we can still see)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return [proc]


def group_orphans(pgid: int) -> list[psutil.Process]:
    """Live members of process group `pgid` after its leader (PID `pgid`) has exited.

    The kernel does not hand out a PID still used as a process group id, so while
    members remain `pgid` names exactly the group our child created. A process *leading*
    a group of that number is a stranger that got the PID later: never included.
    """
    members = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != pgid and os.getpgid(proc.pid) == pgid and alive(proc):
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _signal(proc: psutil.Process, sig: int, *, group: bool) -> None:
    try:
        if group and os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)  # the leader and anything it spawned in its group
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError, psutil.Error):
        pass


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to `timeout` seconds; return the processes still running."""
    pending = [proc for proc in procs if alive(proc)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [proc for proc in pending if alive(proc)]
    return pending


def stop_trees(
    leaders: Iterable[psutil.Process],
    *,
    timeout: float,
    first_signal: int = signal.SIGTERM,
) -> list[psutil.Process]:
    """Signal each leader's process group, SIGKILL what outlives `timeout`.

    Returns what is still running afterwards (empty unless SIGKILL was refused).
    """
    leaders = [proc for proc in leaders if alive(proc)]
    everything = [member for proc in leaders for member in process_tree(proc)]
    for proc in leaders:
        _signal(proc, first_signal, group=True)
    survivors = wait_gone(everything, timeout)
    for proc in survivors:
        _signal(proc, signal.SIGKILL, group=True)
    return wait_gone(survivors, 5.0)


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """True when a server could bind `host:port` now (as servers do, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the kernel considers free right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """`count` distinct ports the kernel considers free right now.

    Each socket stays bound until all are picked: calling `free_port` once per service
    can hand the same port out twice (the kernel may reuse a port just released), and two
    services of one stack then fight over it.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_ports_for(*names: str, host: str = LOCALHOST) -> dict[str, int]:
    """`free_ports`, one per name."""
    return dict(zip(names, free_ports(len(names), host), strict=True))


def pick_port(*preferred: int | None, host: str = LOCALHOST) -> int:
    """The first free port among `preferred` (None entries skipped), else any free one."""
    for port in preferred:
        if port and port_is_free(port, host):
            return port
    return free_port(host)


def accepts_connections(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True when something accepts a TCP connection on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
