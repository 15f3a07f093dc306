"""What PostgreSQL's busy backends are doing during a phase, and who blocks whom
(optional: `make bench` with `--pg-waits`).

`pg_stat_statements` gives a statement's time, which includes waiting for row locks. This
samples `pg_stat_activity` instead, every `INTERVAL` seconds of the measured part: for
each kind of connection (its `application_name`: `api-intake`, `matching-shard`,
`worker`, ...; else PostgreSQL's own kind, such as `autovacuum worker`) the mean number
of its backends that run a statement, split by what they wait on (nothing, a lock, I/O,
an LWLock, the client), and, for a backend waiting on a lock, which connection holds it
and what that one is doing (running its statement, or idle in its transaction while its
process computes or waits for a core).

Sampling costs the server a query every `INTERVAL`: a diagnostic, not part of the runs
that record the tables.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.e2e.load import Phase
from bench.e2e.phases import log

INTERVAL = 0.02
QUERY_CHARS = 60
_SAMPLE = text(
    "SELECT a.pid, coalesce(nullif(a.application_name, ''), a.backend_type) AS app,"
    " a.wait_event_type AS wait,"
    " coalesce(nullif(b.application_name, ''), b.backend_type) AS blocker,"
    " b.state AS blocker_state,"
    " left(b.query, :chars) AS blocker_query"
    " FROM pg_stat_activity a"
    " LEFT JOIN LATERAL unnest(CASE WHEN a.wait_event_type = 'Lock'"
    "   THEN pg_blocking_pids(a.pid) END) AS blocking(pid) ON true"
    " LEFT JOIN pg_stat_activity b ON b.pid = blocking.pid"
    " WHERE a.datname = current_database() AND a.state = 'active'"
    " AND a.pid <> pg_backend_pid()"
)


async def waits_later(engine: AsyncEngine, phase: Phase, summary: dict[str, Any]) -> None:
    """Sample from the end of `phase`'s warm-up to the end of its measured part."""
    samples: list[Sequence[Any]] = []
    try:
        await asyncio.sleep(phase.warmup)
        async with engine.connect() as connection:
            end = time.monotonic() + phase.duration
            while time.monotonic() < end:
                samples.append(await sample(connection))
                await asyncio.sleep(INTERVAL)
    except SQLAlchemyError as exc:  # a measure is a bonus: never fail the bench for it
        log(f"pg_stat_activity unavailable: {str(exc).splitlines()[0]}")
        return
    result = summarize(samples)
    summary.setdefault("pg_waits", {})[phase.name] = result
    log(f"PostgreSQL backends at work ({phase.name}, {result['samples']} samples):")
    for app, states in result["backends"].items():
        log(f"  {app:16} {states}")
    for item in result["blocked_by"][:6]:
        log(
            f"  {item['mean']:.3f} {item['waiter']} waits on {item['blocker']}"
            f" ({item['blocker_state']}: {item['blocker_query'][:50]})"
        )


async def sample(connection: AsyncConnection) -> Sequence[Any]:
    """One look at the database's active backends (but this one): a row per backend,
    or per backend and blocker for one waiting on a lock.

    The read's transaction ends here: PostgreSQL keeps one view of the backends per
    transaction, so a second look within it would see the first one's backends again.
    """
    rows = (await connection.execute(_SAMPLE, {"chars": QUERY_CHARS})).all()
    await connection.rollback()
    return rows


def summarize(samples: Sequence[Iterable[Any]]) -> dict[str, Any]:
    """Mean backends of each connection kind by state, and the mean number of backends
    of a kind waiting on a lock held by another (a waiter blocked by two counts twice
    there, once in `backends`)."""
    states: Counter[tuple[str, str]] = Counter()
    blocked: Counter[tuple[str, str, str, str]] = Counter()
    for rows in samples:
        seen: set[int] = set()
        for row in rows:
            app = row.app or "?"
            if row.pid not in seen:
                seen.add(row.pid)
                states[(app, _state(row.wait))] += 1
            if row.blocker_state is not None or row.blocker is not None:
                query = " ".join(str(row.blocker_query or "").split())
                blocked[(app, row.blocker or "?", row.blocker_state or "?", query)] += 1
    count = max(len(samples), 1)
    backends: dict[str, dict[str, float]] = {}
    for (app, state), n in sorted(states.items()):
        backends.setdefault(app, {})[state] = round(n / count, 3)
    for by_state in backends.values():
        busy = sum(by_state.values())
        by_state["lock_share"] = round(by_state.get("lock", 0.0) / busy, 3) if busy else 0.0
    return {
        "samples": len(samples),
        "interval_seconds": INTERVAL,
        "backends": backends,
        "blocked_by": [
            {
                "waiter": waiter,
                "blocker": blocker,
                "blocker_state": state,
                "blocker_query": query,
                "mean": round(n / count, 3),
            }
            for (waiter, blocker, state, query), n in blocked.most_common()
        ],
    }


def _state(wait: str | None) -> str:
    """`running` (on a core or waiting for one: PostgreSQL cannot tell), else the kind
    of wait in lower case (`lock`, `io`, `lwlock`, `client`, ...)."""
    return "running" if wait is None else wait.lower()
