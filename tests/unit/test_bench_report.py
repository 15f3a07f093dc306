"""Every bench row names how fast its host was: VMs of one kind run on different hosts,
and a run is only comparable with another one next to that number."""

from __future__ import annotations

import re
import time

import pytest

from bench.e2e import report


def test_machine_names_the_host_speed() -> None:
    found = re.search(r"speed (\d+) ms$", report.machine())
    assert found is not None
    assert int(found.group(1)) > 0


def test_speed_counts_cpu_time_not_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # A host that stalls the process (here: a sleep) must not read as a slow CPU.
    monkeypatch.setattr(report, "_calibration_workload", lambda: time.sleep(0.05))
    assert report.python_speed_ms(repeat=3) < 10
