"""The verdict of a chaos run and its rows in docs/reliability.md (one table per fault)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FAULT_TITLES = {
    "matching": "SIGKILL matching (restarted at once)",
    "worker": "SIGKILL worker (restarted at once)",
    "api": "SIGKILL api #1 of 2 (restarted at once)",
    "redis": "Redis SHUTDOWN NOSAVE, started again on the same port",
    "postgres": "PostgreSQL `pg_ctl stop -m fast`, started again on the same port",
}
FAULT_HEADER = (
    "| date | commit | load | down (s) | healthy after (s) | orders accepted again after (s) |"
    " engine serving after (s) | first report on the stream after (s) | longest gap without"
    " a 201 (s) | failed requests in the window | verdict |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)
RUNS_HEADER = (
    "| date | commit | machine | load | accepted orders | lost | duplicate trades |"
    " pending_new after drain | 5xx during PostgreSQL restart (503 / 500) | invariants |"
    " verdict |\n|---|---|---|---|---|---|---|---|---|---|---|"
)
RECOVERY_TARGET_SECONDS = 5.0


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def postgres_5xx(summary: dict[str, Any]) -> tuple[int, int, int]:
    """(503s, 500s, other 5xx) clients got during the PostgreSQL restart window."""
    for fault in summary.get("faults", []):
        if fault["fault"] == "postgres":
            counts = {"503": 0, "500": 0, "other": 0}
            for key, count in fault["failures"].items():
                status = key.split(" ", 1)[0]
                if status == "503":
                    counts["503"] += count
                elif status == "500":
                    counts["500"] += count
                elif status.startswith("5"):
                    counts["other"] += count
            return counts["503"], counts["500"], counts["other"]
    return 0, 0, 0


def fault_ok(fault: dict[str, Any]) -> bool:
    recovered = fault.get("recovered")
    return recovered is not None and recovered <= RECOVERY_TARGET_SECONDS


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    audit = summary.get("audit")
    problems = []
    if audit is None:
        return {"ok": False, "text": "the run did not finish (see the log)", "problems": []}
    if audit["lost_orders"]:
        problems.append(f"{audit['lost_orders']} accepted orders lost")
    if audit["duplicate_trades"]:
        problems.append(f"{audit['duplicate_trades']} duplicate trade settlements")
    if audit["pending_new_after_drain"]:
        problems.append(f"{audit['pending_new_after_drain']} orders stuck in pending_new")
    if audit["violation_count"]:
        problems.append(f"{audit['violation_count']} invariant violations")
    _, five_hundreds, other = postgres_5xx(summary)
    if five_hundreds or other:
        problems.append(f"{five_hundreds} × 500 (+{other} other 5xx) during the PostgreSQL restart")
    slow = [f["fault"] for f in summary.get("faults", []) if not fault_ok(f)]
    crashes = [
        f"{note.split(' exited')[0]} crashed on the {f['fault']} fault"
        for f in summary.get("faults", [])
        for note in f["notes"]
        if "exited by itself" in note
    ]
    # Slow recovery is reported but is a goal, not a correctness failure.
    text = "; ".join(problems) if problems else "no loss, no duplicate, invariants hold"
    if slow:
        text += f" (recovery > {RECOVERY_TARGET_SECONDS:.0f} s: {', '.join(slow)})"
    if crashes:
        # Not a correctness failure (a restart policy brings it back), but a finding.
        text += f"; {'; '.join(sorted(set(crashes)))} (restarted by the supervisor)"
    return {"ok": not problems, "text": text, "problems": problems, "slow": slow}


def _insert(doc: Path, marker: str, heading: str, header: str, row: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Reliability\n"
    tag = f"<!-- chaos:{marker} -->"
    if tag not in text:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{header}\n{tag}\n"
    before, after = text.split(tag, 1)
    doc.write_text(before.rstrip("\n") + "\n" + row + "\n" + tag + after, encoding="utf-8")


def write(doc: Path, summary: dict[str, Any]) -> None:
    load = summary.get("load", {})
    load_text = f"open {load.get('rate', 0):.0f}/s, {load.get('clients', 0)} clients"
    for fault in summary.get("faults", []):
        failures = ", ".join(f"{k} ×{v}" for k, v in sorted(fault["failures"].items())) or "none"
        ok = "ok" if fault_ok(fault) else f"recovery > {RECOVERY_TARGET_SECONDS:.0f} s"
        if fault["notes"]:
            ok += "; " + "; ".join(fault["notes"])
        row = (
            f"| {summary['date']} | {summary['commit']} | {load_text}"
            f" | {_s(fault['down_seconds'])} | {_s(fault['healthy_after'])}"
            f" | {_s(fault['orders_again_after'])} | {_s(fault['engine_after_db'])}"
            f" | {_s(fault['engine_after_stream'])} | {_s(fault['longest_gap'])}"
            f" | {failures} | {ok} |"
        )
        name = fault["fault"]
        _insert(doc, name, f"### {FAULT_TITLES[name]}", FAULT_HEADER, row)
    audit = summary.get("audit") or {}
    s503, s500, other = postgres_5xx(summary)
    row = (
        f"| {summary['date']} | {summary['commit']} | {summary['machine']} | {load_text}"
        f" | {audit.get('accepted_orders', '–')} | {audit.get('lost_orders', '–')}"
        f" | {audit.get('duplicate_trades', '–')} | {audit.get('pending_new_after_drain', '–')}"
        f" | {s503} / {s500}{f' (+{other} other)' if other else ''}"
        f" | {audit.get('violation_count', '–')} violations | {summary['verdict']['text']} |"
    )
    _insert(doc, "runs", "## Chaos runs", RUNS_HEADER, row)
