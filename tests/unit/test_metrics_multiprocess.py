"""Prometheus multiprocess bookkeeping on real metric files: a wiped directory at start,
`live*` gauges summed over live processes only, counters of dead processes kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from brokerx_core.observability.multiprocess import (
    MULTIPROC_ENV,
    live_gauge_pids,
    prepare_dir,
    scrape_registry,
    sweep_dead,
)

POOL = "brokerx_db_pool_connections"


def write(path: Path, name: str, labels: dict[str, str], value: float) -> None:
    """One sample in a metric file, as prometheus_client's multiprocess values write it."""
    values = MmapedDict(str(path))
    key = mmap_key(name, name, list(labels), list(labels.values()), "help")
    values.write_value(key, value, 0.0)
    values.close()


def pool_file(directory: Path, pid: int, size: float) -> None:
    labels = {"service": "api", "state": "size"}
    write(directory / f"gauge_livesum_{pid}.db", POOL, labels, size)


def requests_file(directory: Path, pid: int, count: float) -> None:
    write(directory / f"counter_{pid}.db", "http_requests_total", {"handler": "/x"}, count)


def test_prepare_dir_creates_it_and_removes_only_metric_files(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "metrics"
    prepare_dir(directory)
    assert directory.is_dir()
    requests_file(directory, 1, 5)
    (directory / "keep.txt").write_text("not ours")
    prepare_dir(directory)
    assert [p.name for p in directory.iterdir()] == ["keep.txt"]


def test_live_gauges_are_summed_over_live_processes_and_counters_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    for pid in (101, 102):
        pool_file(tmp_path, pid, 10)
        requests_file(tmp_path, pid, 3)

    registry = scrape_registry()
    assert registry is not REGISTRY
    labels = {"service": "api", "state": "size"}
    assert registry.get_sample_value(POOL, labels) == 20
    assert registry.get_sample_value("http_requests_total", {"handler": "/x"}) == 6

    assert live_gauge_pids(tmp_path) == {101, 102}
    assert sweep_dead(tmp_path, live=[102]) == [101]
    assert live_gauge_pids(tmp_path) == {102}
    registry = scrape_registry()
    assert registry.get_sample_value(POOL, labels) == 10  # the dead worker's pool is gone
    assert registry.get_sample_value("http_requests_total", {"handler": "/x"}) == 6


def test_without_the_variable_the_process_registry_is_scraped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert scrape_registry() is REGISTRY


# A fresh interpreter in multiprocess mode: the api package makes values read a cached
# pid; a forked child must still write its own file (the library's own fork detection).
CACHED_PID_PROBE = """
import os
import brokerx_api.app  # the package swaps the value class before any metric exists
from prometheus_client import Counter
from brokerx_core.observability.multiprocess import use_cached_pid

import sys
calls = []
counter = Counter("fork_probe", "probe")
sys.setprofile(lambda f, event, arg: calls.append(1) if arg is os.getpid else None)
for _ in range(100):
    counter.inc()
sys.setprofile(None)
print("getpid calls", len(calls))
print("swapped again", use_cached_pid())
child = os.fork()
if child == 0:
    counter.inc(1000)
    os._exit(0)
os.waitpid(child, 0)
counter.inc()
print("pids", os.getpid(), child)
"""


def test_metric_values_skip_getpid_and_a_forked_child_still_counts_apart(
    tmp_path: Path,
) -> None:
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", CACHED_PID_PROBE], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "getpid calls 0" in out.stdout, out.stdout  # no system call per increment
    assert "swapped again False" in out.stdout
    parent, child = out.stdout.split("pids ", 1)[1].split()
    assert (tmp_path / f"counter_{parent}.db").exists()
    assert (tmp_path / f"counter_{child}.db").exists()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert registry.get_sample_value("fork_probe_total") == 101 + 1000


def test_the_pid_is_not_cached_once_the_process_has_metrics(tmp_path: Path) -> None:
    probe = (
        "from prometheus_client import Counter, values\n"
        "Counter('early', 'made before the swap')\n"
        "from brokerx_core.observability.multiprocess import use_cached_pid\n"
        "before = values.ValueClass\n"
        "print(use_cached_pid(), values.ValueClass is before)\n"
    )
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
