"""Every bench row names how fast its host was: VMs of one kind run on different hosts,
and a run is only comparable with another one next to that number."""

from __future__ import annotations

import re
import time
from pathlib import Path

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


def test_book_result_becomes_a_row_of_the_book_table(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    heading, header = report.TABLES["book"]
    doc.write_text(f"{heading}\n\n{header}\n| old row |\n<!-- bench:book -->\n\nProse.\n")
    summary = {"date": "2026-11-24", "commit": "abc1234", "machine": "2 vCPU"}
    book = {"ops_per_s": 996759, "p50_us": 0.911, "p99_us": 3.355, "p999_us": 6.49,
            "max_us": 3965.625}  # fmt: skip

    report.insert_row(doc, "book", report.book_row(summary, book))

    lines = doc.read_text().splitlines()
    row = lines.index("| old row |") + 1
    assert lines[row] == (
        "| 2026-11-24 | abc1234 | 2 vCPU | 996,759 | 0.91 µs | 3.35 µs | 6.49 µs | 4.0 ms |"
    )
    assert lines[row + 1] == "<!-- bench:book -->"
    assert lines[-1] == "Prose."
    # the row has as many cells as the table's header
    assert lines[row].count("|") == header.splitlines()[0].count("|")
