"""Faults for `make chaos` and how each is measured.

Each fault returns when the faulty part has been started again; recovery is then read
from what clients saw (the load generator's timeline of answers), from the database
(the first order accepted after the fault that the engine processed) and from the live
stream (the first execution report from an engine batch after the fault).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.e2e.stream import StreamStats
from bench.e2e.supervisor import Cluster
from brokerx_devstack.binaries import preference
from brokerx_devstack.postgres import ensure_postgres, stop_postgres
from brokerx_devstack.redisserver import ensure_redis

ORDER_KINDS = frozenset({"limit", "market", "ioc", "fok"})


@dataclass
class FaultResult:
    fault: str
    at: float  # wall time of the fault
    down_seconds: float  # fault → the part started again
    healthy_after: float | None = None  # fault → the part's /health 200 (services)
    first_order_after: float | None = None  # fault → first 201 from any api
    orders_again_after: float | None = None  # fault → first 201 after the last failure
    first_order_via_faulty_api: float | None = None
    engine_after_db: float | None = None  # fault → an order accepted after it left pending_new
    engine_after_stream: float | None = None  # fault → first report of a later batch, received
    longest_gap: float | None = None  # longest stretch without a 201 in the fault window
    failures: Counter[str] = field(default_factory=Counter)  # "status code" -> count
    notes: list[str] = field(default_factory=list)

    def recovered(self) -> float | None:
        """Seconds until orders were accepted again and the engine served again."""
        values = [self.orders_again_after, self.engine_after_db]
        return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "at": datetime.fromtimestamp(self.at).isoformat(timespec="seconds"),
            "down_seconds": _r(self.down_seconds),
            "healthy_after": _r(self.healthy_after),
            "first_order_after": _r(self.first_order_after),
            "orders_again_after": _r(self.orders_again_after),
            "first_order_via_faulty_api": _r(self.first_order_via_faulty_api),
            "engine_after_db": _r(self.engine_after_db),
            "engine_after_stream": _r(self.engine_after_stream),
            "recovered": _r(self.recovered()),
            "longest_gap": _r(self.longest_gap),
            "failures": dict(self.failures),
            "notes": self.notes,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# --- the faults -------------------------------------------------------------------------


def kill_service(cluster: Cluster, name: str) -> float:
    """SIGKILL a service and start it again at once (a supervisor's restart policy)."""
    service = cluster.services[name]
    started = time.monotonic()
    service.kill()
    service.start()
    return time.monotonic() - started


def restart_redis(cluster: Cluster, outage: float) -> float:
    """SHUTDOWN NOSAVE (every stream, group and cached key is lost), then start again."""
    assert cluster.servers is not None
    assert cluster.servers.redis is not None
    port = cluster.servers.redis.port
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"SHUTDOWN NOSAVE\r\n")
            sock.recv(64)  # the server closes the connection as it exits
    except OSError:
        pass
    deadline = time.monotonic() + 10
    while _redis_answers(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(outage)
    cluster.servers.redis = ensure_redis(cluster.root, preference(None), port=port, last_port=port)
    if cluster.servers.redis.port != port:
        raise RuntimeError(f"Redis came back on {cluster.servers.redis.port}, not {port}")
    return time.monotonic() - started


def restart_postgres(cluster: Cluster, outage: float) -> float:
    """`pg_ctl stop -m fast` (every connection is cut), then start on the same port."""
    assert cluster.servers is not None
    running = cluster.servers.postgres
    assert running is not None
    started = time.monotonic()
    stop_postgres(cluster.root, running.binaries)
    time.sleep(outage)
    cluster.servers.postgres = ensure_postgres(
        cluster.root, preference(None), port=running.port, last_port=running.port
    )
    if cluster.servers.postgres.port != running.port:
        raise RuntimeError(f"PostgreSQL came back on another port ({cluster.servers.postgres})")
    return time.monotonic() - started


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# --- measuring recovery -------------------------------------------------------------------


async def engine_serving_after(engine: AsyncEngine, since: float, within: float) -> float | None:
    """Seconds from `since` until an order accepted after it has left `pending_new`."""
    query = text(
        "SELECT 1 FROM client_order WHERE created_at > to_timestamp(:since)"
        " AND status <> 'pending_new' LIMIT 1"
    )
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            async with engine.connect() as conn:
                if (await conn.execute(query, {"since": since})).first() is not None:
                    return time.time() - since
        except Exception:  # noqa: BLE001 - PostgreSQL may be the part that is down
            pass
        await asyncio.sleep(0.1)
    return None


async def wait_for(predicate: Any, within: float, every: float = 0.1) -> float | None:
    started = time.time()
    while time.time() - started < within:
        if await asyncio.to_thread(predicate):
            return time.time() - started
        await asyncio.sleep(every)
    return None


def stream_after(stats: StreamStats, since: float) -> float | None:
    """Receipt of the first report whose engine batch ran after `since`."""
    for received, ts in stats.report_times:
        if received < since:
            continue
        try:
            batch = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if batch > since:
            return received - since
    return None


def read_timeline(
    result: FaultResult,
    timeline: list[tuple[float, str, int, str, int]],
    window_end: float,
    faulty_port: int | None = None,
) -> None:
    """Fill in what clients saw between the fault and `window_end`."""
    since = result.at
    window = [entry for entry in timeline if since <= entry[0] <= window_end]
    last_failure = since
    for wall, kind, status, code, _ in window:
        if status >= 300 or status == 0:
            if kind in ("cancel", "replace") and status in (409, 422):
                continue  # a race with a fill, not a failure
            result.failures[f"{status} {code}".strip()] += 1
            last_failure = max(last_failure, wall)
    last_ok = since
    gap = 0.0
    for wall, kind, status, _, port in window:
        if kind not in ORDER_KINDS or status != 201:
            continue
        if result.first_order_after is None:
            result.first_order_after = wall - since
        if result.orders_again_after is None and wall >= last_failure:
            result.orders_again_after = wall - since
        if faulty_port == port and result.first_order_via_faulty_api is None:
            result.first_order_via_faulty_api = wall - since
        gap = max(gap, wall - last_ok)
        last_ok = wall
    result.longest_gap = max(gap, window_end - last_ok) if result.first_order_after else None
