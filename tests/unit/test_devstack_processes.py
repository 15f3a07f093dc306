"""Ports and process records: what lets `stop` find leftovers without killing strangers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from brokerx_devstack.procs import (
    ProcessRecord,
    accepts_connections,
    free_port,
    free_ports,
    free_ports_for,
    group_orphans,
    pick_port,
    port_is_free,
    stop_trees,
)
from brokerx_devstack.state import load_state, update_state


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_listened_port_is_not_free(listening: int) -> None:
    assert not port_is_free(listening)
    assert accepts_connections(listening)


def test_pick_port_takes_the_first_free_preferred_port(listening: int) -> None:
    free = free_port()
    assert pick_port(free) == free
    assert pick_port(listening, None, free) == free


def test_free_ports_are_distinct_and_free() -> None:
    # One free_port() per service handed out the same port twice in a CI run (the
    # kernel reuses a port just released: about one repeat in 130 picks here), and the
    # stack's mail catcher and matching service then fought over it.
    ports = free_ports(500)
    assert len(set(ports)) == 500
    assert all(port_is_free(port) for port in ports[:20])


def test_free_ports_for_names_one_distinct_port_each() -> None:
    ports = free_ports_for("api", "matching", "worker", "smtp")
    assert list(ports) == ["api", "matching", "worker", "smtp"]
    assert len(set(ports.values())) == 4


def test_pick_port_falls_back_to_any_free_port(listening: int) -> None:
    chosen = pick_port(listening, None)
    assert chosen != listening
    assert port_is_free(chosen)


def test_a_record_names_only_the_process_it_was_taken_of() -> None:
    me = ProcessRecord.of(os.getpid(), "pytest")
    assert me is not None
    assert me.is_running()
    assert ProcessRecord.from_json(me.to_json()) == me
    # Same PID, other start time: the PID was reused by another process after a crash.
    assert not ProcessRecord(me.pid, me.started_at - 3600, "old").is_running()


def test_malformed_records_are_ignored() -> None:
    assert ProcessRecord.from_json(None) is None
    assert ProcessRecord.from_json({"pid": "x", "started_at": 1}) is None
    assert ProcessRecord.from_json({"started_at": 1.0}) is None


def test_stop_trees_stops_a_child_and_what_it_spawned() -> None:
    # A parent that ignores SIGTERM with a child that sleeps: both must go (SIGKILL).
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, process_group=0
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        leader = psutil.Process(parent.pid)
        tree = [leader, *leader.children(recursive=True)]
        assert len(tree) == 2
        assert stop_trees([leader], timeout=0.5) == []
        parent.wait(5)
        assert not any(proc.is_running() and proc.status() != "zombie" for proc in tree)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_what_a_dead_leader_left_in_its_group_is_found_and_stopped() -> None:
    # A leader (like a killed uvicorn master) exits, its child (a worker) lives on.
    script = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
    )
    leader = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, process_group=0
    )
    assert leader.stdout is not None
    orphan = psutil.Process(int(leader.stdout.readline()))
    try:
        leader.wait(10)
        assert group_orphans(leader.pid) == [orphan]
        assert group_orphans(os.getpid()) == []  # our own group holds no orphan of theirs
        assert stop_trees(group_orphans(leader.pid), timeout=5) == []
        assert group_orphans(leader.pid) == []
    finally:
        if orphan.is_running():
            orphan.kill()


def test_state_sections_are_set_and_removed(tmp_path: Path) -> None:
    update_state(tmp_path, redis={"port": 56379}, launcher={"pid": 1})
    update_state(tmp_path, launcher=None)
    assert load_state(tmp_path) == {"redis": {"port": 56379}}
    (tmp_path / "devstack.json").write_text("{not json")
    assert load_state(tmp_path) == {}
