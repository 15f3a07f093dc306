"""Numbers of a bench run: the summary dict, rows in docs/performance.md, a latency plot.

Rows are inserted just above a marker comment (`<!-- bench:<table> -->`) in their section,
so the prose around the tables stays as written and other sections are never touched.
A missing section is appended at the end of the document with its table header.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]

TABLES: dict[str, tuple[str, str]] = {
    "book": (
        "## Book",
        "| date | commit | machine | ops/s (untimed run, median of 3) | p50 | p99 | p99.9"
        " | max |\n|---|---|---|---|---|---|---|---|",
    ),
    "e2e": (
        "## End to end",
        "| date | commit | machine | phase | load | accepted orders/s (all requests/s) | ACK p50 /"
        " p95 / p99 / max (ms) | intake→fill p50 / p99 (ms) | errors | races / refusals | CPU %"
        " api / matching / worker / postgres / redis / generator / other load | invariants |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ),
    "bare": (
        "## Bare intake bound",
        "| date | commit | machine | concurrency | bare intake orders/s | bare p50 / p99 (ms) |"
        " e2e new-orders-only orders/s | e2e ÷ bare | CPU % bare process / postgres / redis |\n"
        "|---|---|---|---|---|---|---|---|---|",
    ),
    "peers": (
        "## Peer comparison",
        "| date | commit | machine | most accepted orders/s with ACK p95 ≤ 500 ms (offered"
        " rate, p95) | closed-loop peak accepted orders/s (ACK p95) |\n|---|---|---|---|---|",
    ),
    "recovery": (
        "## Recovery (bench)",
        "| date | commit | machine | result |\n|---|---|---|---|",
    ),
}


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dirty() -> bool:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def machine() -> str:
    """The host as rows name it, with its `python_speed_ms` (hosts of one VM kind differ)."""
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} vCPU, {ram:.0f} GiB, Python {platform.python_version()},"
        f" speed {python_speed_ms():.0f} ms"
    )


def python_speed_ms(repeat: int = 5) -> float:
    """CPU milliseconds of one fixed pure-Python workload, the median of `repeat` runs.

    Lower is faster. VMs of the same kind run on different hosts: this puts a number on
    the host in every row, so runs from different sessions compare (a run is as fast as
    the cores it got, whatever the code did).
    """
    times = []
    for _ in range(repeat):
        started = time.process_time()
        _calibration_workload()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def _calibration_workload() -> int:
    """Dicts, string formatting, sorting and integer arithmetic: what the services do."""
    table = {f"k{i}": i * 7 % 1009 for i in range(60_000)}
    ranked = sorted(table.items(), key=lambda item: (item[1], item[0]))
    return sum(value * value for _, value in ranked[::3])


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def e2e_row(summary: dict[str, Any], phase: dict[str, Any], invariants: str) -> str:
    ack = phase["ack_ms"]
    fill = phase["intake_to_fill_ms"]
    cpu = phase["cpu"]
    split = phase["answers"]
    error_text = str(split["errors"])
    if split["errors"]:
        top = ", ".join(f"{k}×{v}" for k, v in list(phase["error_codes"].items())[:3])
        error_text += f" ({top})"
    load = (
        f"closed, {phase['clients']} clients"
        if phase["mode"] == "closed"
        else f"open, {phase['rate']:.0f}/s"
    )
    return (
        f"| {summary['date']} | {summary['commit']} | {summary['machine']} | {phase['name']}"
        f" | {load}, {phase['seconds']:.0f} s | {phase['accepted_per_second']:.0f}"
        f" ({phase['requests_per_second']:.0f})"
        f" | {_ms(ack['p50'])} / {_ms(ack['p95'])} / {_ms(ack['p99'])} / {_ms(ack['max'])}"
        f" | {_ms(fill['p50'])} / {_ms(fill['p99'])} | {error_text}"
        f" | {split['races']} / {split['business']}"
        f" | {cpu.get('api', 0):.0f} / {cpu.get('matching', 0):.0f} / {cpu.get('worker', 0):.0f}"
        f" / {cpu.get('postgres', 0):.0f} / {cpu.get('redis', 0):.0f}"
        f" / {cpu.get('generator', 0):.0f} / {cpu.get('other processes', 0):.0f} | {invariants} |"
    )


def book_row(summary: dict[str, Any], book: dict[str, Any]) -> str:
    """The order book micro-benchmark (`bench/book_bench.py --json-out`)."""

    def us(value: float) -> str:
        return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.2f} µs"

    return (
        f"| {summary['date']} | {summary['commit']} | {summary['machine']}"
        f" | {book['ops_per_s']:,} | {us(book['p50_us'])} | {us(book['p99_us'])}"
        f" | {us(book['p999_us'])} | {us(book['max_us'])} |"
    )


def bare_row(summary: dict[str, Any]) -> str:
    bare = summary["bare_intake"]
    ratio = summary.get("e2e_over_bare")
    cpu = bare.get("cpu", {})
    return (
        f"| {summary['date']} | {summary['commit']} | {summary['machine']}"
        f" | {bare['concurrency']} | {bare['accepted_per_second']:.0f}"
        f" | {_ms(bare['latency_ms']['p50'])} / {_ms(bare['latency_ms']['p99'])}"
        f" | {summary.get('e2e_new_orders_per_second', 0):.0f}"
        f" | {ratio:.2f} | {cpu.get('bare', 0):.0f} / {cpu.get('postgres', 0):.0f}"
        f" / {cpu.get('redis', 0):.0f} |"
        if ratio is not None
        else f"| {summary['date']} | {summary['commit']} | {summary['machine']} | – | failed"
        " | – | – | – | – |"
    )


def peers_row(summary: dict[str, Any]) -> str:
    best = summary.get("under_500ms")
    closed = next(p for p in summary["phases"] if p["mode"] == "closed")
    best_text = (
        f"{best['accepted_per_second']:.0f} (open {best['rate']:.0f} req/s,"
        f" p95 {_ms(best['ack_p95_ms'])} ms)"
        if best
        else "none of the open loops stayed under 500 ms"
    )
    return (
        f"| {summary['date']} | {summary['commit']} | {summary['machine']} | {best_text}"
        f" | {closed['accepted_per_second']:.0f} ({_ms(closed['ack_ms']['p95'])} ms) |"
    )


def insert_row(doc: Path, table: str, row: str) -> None:
    """Put `row` at the end of `table`'s rows (creating its section when missing)."""
    marker = f"<!-- bench:{table} -->"
    heading, header = TABLES[table]
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    if marker not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{header}\n{marker}\n"
    before, after = text.split(marker, 1)
    doc.write_text(before.rstrip("\n") + "\n" + row + "\n" + marker + after, encoding="utf-8")


def plot(phases: dict[str, dict[str, list[float]]], path: Path, title: str) -> None:
    """Latency CDFs (log x) of every phase: ACK and intake→fill report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, series, label in (
        (axes[0], "ack", "order ACK (POST /orders → 201)"),
        (axes[1], "fill", "201 → fill report (orders filled on arrival)"),
    ):
        for name, data in phases.items():
            values = np.sort(np.asarray(data.get(series) or [], dtype=float) * 1000.0)
            if values.size == 0:
                continue
            values = np.maximum(values, 0.01)
            y = np.arange(1, values.size + 1) / values.size
            ax.plot(values, y, label=f"{name} (n={values.size})")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("fraction of requests ≤ x")
        ax.set_title(label)
        for q in (0.5, 0.99):
            ax.axhline(q, color="grey", linewidth=0.5, linestyle=":")
        ax.grid(True, which="both", linewidth=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
