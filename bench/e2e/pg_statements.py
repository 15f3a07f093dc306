"""PostgreSQL's time by statement during a phase (optional: `make bench` with
`--pg-statements`).

The dev cluster loads `pg_stat_statements` only when asked (`DEVSTACK_PG_SETTINGS`,
`SETTINGS` below): it costs a little on every statement, so the runs that record the
tables go without it. `track = all` also counts the statements run inside the intake
and replace functions (`toplevel` false: their time is part of their caller's).
Execution time includes waiting for row locks, so a statement's time is not all CPU.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.e2e.load import Phase
from bench.e2e.phases import log

SETTINGS = "shared_preload_libraries=pg_stat_statements;pg_stat_statements.track=all"
TOP = 25
_READ = text(
    "SELECT calls, total_exec_time, rows, toplevel, query,"
    " sum(total_exec_time) FILTER (WHERE toplevel) OVER () AS toplevel_total"
    " FROM pg_stat_statements ORDER BY total_exec_time DESC"
)


async def statements_later(engine: AsyncEngine, phase: Phase, summary: dict[str, Any]) -> None:
    """Reset the statistics when `phase`'s measured part starts, read them when it ends."""
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        await asyncio.sleep(phase.warmup)
        async with engine.begin() as connection:
            await connection.execute(text("SELECT pg_stat_statements_reset()"))
        await asyncio.sleep(phase.duration)
        async with engine.connect() as connection:
            rows = (await connection.execute(_READ)).all()
    except SQLAlchemyError as exc:  # a measure is a bonus: never fail the bench for it
        log(f"pg_stat_statements unavailable: {str(exc).splitlines()[0]}")
        return
    result = summarize(rows, phase.duration)
    summary.setdefault("pg_statements", {})[phase.name] = result
    log(f"PostgreSQL by statement ({phase.name}, {result['toplevel_ms']:.0f} ms top level):")
    for item in result["statements"][:12]:
        log(
            f"  {item['share_percent']:5.1f} % {item['total_ms']:8.0f} ms"
            f" {item['calls']:7d} calls {item['ms_per_call']:7.3f} ms/call"
            f" {'top ' if item['toplevel'] else 'in  '} {item['query'][:100]}"
        )


def summarize(rows: Sequence[Any], seconds: float, top: int = TOP) -> dict[str, Any]:
    """The `top` statements by execution time, each with its share of the time of all
    top-level statements (a nested statement's share is within its caller's)."""
    total = float(rows[0].toplevel_total or 0.0) if rows else 0.0
    statements = [
        {
            "calls": int(row.calls),
            "total_ms": round(float(row.total_exec_time), 1),
            "ms_per_call": round(float(row.total_exec_time) / max(int(row.calls), 1), 3),
            "share_percent": round(100.0 * float(row.total_exec_time) / total, 1)
            if total
            else None,
            "rows": int(row.rows),
            "toplevel": bool(row.toplevel),
            "query": " ".join(str(row.query).split())[:300],
        }
        for row in rows[:top]
    ]
    return {"seconds": seconds, "toplevel_ms": round(total, 1), "statements": statements}
