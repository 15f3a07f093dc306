"""`make bench --pg-statements`: PostgreSQL's time by statement, each statement's share
taken of the top-level statements' time (nested ones are inside their caller's)."""

from __future__ import annotations

from types import SimpleNamespace

from bench.e2e.pg_statements import summarize


def _row(calls: int, ms: float, toplevel: bool, query: str) -> SimpleNamespace:
    return SimpleNamespace(
        calls=calls, total_exec_time=ms, rows=calls, toplevel=toplevel, query=query,
        toplevel_total=800.0,
    )  # fmt: skip


def test_shares_are_of_the_top_level_time_and_queries_fit_on_one_line() -> None:
    rows = [
        _row(100, 600.0, True, "SELECT intake_place_batch(\n    $1,\n    $2)"),
        _row(100, 300.0, False, "SELECT ... FOR NO KEY UPDATE"),
        _row(50, 200.0, True, "WITH trades AS (INSERT ...)"),
    ]

    result = summarize(rows, 30.0, top=2)

    assert result["toplevel_ms"] == 800.0
    assert [s["share_percent"] for s in result["statements"]] == [75.0, 37.5]
    assert result["statements"][0]["query"] == "SELECT intake_place_batch( $1, $2)"
    assert result["statements"][0]["ms_per_call"] == 6.0
    assert result["statements"][1]["toplevel"] is False


def test_no_statements_no_shares() -> None:
    assert summarize([], 30.0) == {"seconds": 30.0, "toplevel_ms": 0.0, "statements": []}
