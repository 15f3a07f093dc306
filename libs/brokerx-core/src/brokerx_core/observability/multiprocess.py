"""Prometheus multiprocess mode: one `/metrics` for several worker processes.

prometheus_client switches every metric to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR` when that variable is set *before* it is imported (the api
sets it in its master process, before the workers start). A scrape then aggregates the
files of every process: counters, histograms and summaries are summed, gauges follow
their `multiprocess_mode`. Only `live*` gauge modes are used in BrokerX: their files are
deleted when a process is declared dead (`sweep_dead`), so a dead worker never lingers
in a gauge; counters of dead workers stay, so sums never go backwards.

Every multiprocess value asks `os.getpid()` on each increment, to notice a fork — a
system call each time (py-spy, closed loop: ~3 % of the api's CPU). `use_cached_pid`
swaps in the library's own value class built with a pid read from memory, refreshed in
a forked child.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
# The collectors prometheus_client registers itself (no metric values behind them).
_BUILT_IN_FAMILIES = ("process_", "python_")
_pid = {"value": os.getpid(), "cached": False}


def multiprocess_dir() -> Path | None:
    """The multiprocess directory of this process, None in the ordinary single-process mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_dir(path: Path) -> None:
    """Create `path` if missing and delete the metric files of an earlier run.

    Must run before any worker starts writing. Only `*.db` files are removed (the
    directory may be a mount point, or hold something that is not ours).
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def live_gauge_pids(path: Path) -> set[int]:
    """PIDs that have `live*` gauge files in `path`."""
    pids = set()
    for entry in path.iterdir():
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match:
            pids.add(int(match.group(1)))
    return pids


def sweep_dead(path: Path, live: Collection[int]) -> list[int]:
    """Drop the `live*` gauge files of every PID not in `live`; the PIDs dropped."""
    dead = sorted(live_gauge_pids(path) - set(live))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return dead


def retire_current_process() -> None:
    """Multiprocess mode: drop this process's `live*` gauges (it is about to exit)."""
    path = multiprocess_dir()
    if path is not None and path.is_dir():
        mark_process_dead(os.getpid(), str(path))  # type: ignore[no-untyped-call]


def scrape_registry() -> CollectorRegistry:
    """What `/metrics` renders: the process's registry, or every process's files."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


def _cached_pid() -> int:
    return _pid["value"]


def _forked() -> None:
    _pid["value"] = os.getpid()


def use_cached_pid() -> bool:
    """Multiprocess mode: make metric values read this process's pid from memory rather
    than from a system call per increment; whether the swap happened.

    Only before the process has any metric of its own: a value made with the old class
    would keep its own handle on the same file as the new class's. The pid is refreshed
    in a forked child (`os.register_at_fork`), so a fork is still noticed.
    """
    if multiprocess_dir() is None or _pid["cached"]:
        return False
    if any(not family.name.startswith(_BUILT_IN_FAMILIES) for family in REGISTRY.collect()):
        return False
    _pid["value"], _pid["cached"] = os.getpid(), True
    os.register_at_fork(after_in_child=_forked)
    values.ValueClass = values.MultiProcessValue(process_identifier=_cached_pid)  # type: ignore[no-untyped-call]
    return True
