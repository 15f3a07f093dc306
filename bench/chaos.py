"""`make chaos`: faults under load, then the books are audited (not a test).

    uv run python bench/chaos.py [--rate 100] [--clients 100] [--settle 10] [--outage 2]
                                 [--faults matching,worker,api,redis,postgres] [--no-docs]

Starts PostgreSQL and Redis (`.devdata/chaos`, wiped first), a mail catcher, two api
processes, matching and worker as processes of its own (see bench/e2e/supervisor.py),
creates funded clients, and drives an open-loop order mix at `--rate` round-robin over
both apis (a client retries a request once on the other api when one does not answer;
every new order carries a `client_order_id`, so a retry never duplicates it). Then,
one after the other, with `--settle` seconds of normal traffic between them:

* `matching` — SIGKILL the matching service, start it again at once;
* `worker`   — SIGKILL the worker (outbox relay, notifier), start it again;
* `api`      — SIGKILL api #1 (api #2 keeps serving), start it again;
* `redis`    — SHUTDOWN NOSAVE (streams, groups, caches lost), start it on the same port;
* `postgres` — `pg_ctl stop -m fast`, `--outage` seconds down, start on the same port.

Afterwards it waits for the engine to drain and checks: every order that got a 201/200
exists and is resting or terminal (lost = 0), no trade was settled twice, nothing
stayed `pending_new`, DESIGN.md's invariants hold, and during the PostgreSQL restart
clients got only 503s (never 500). Results go to docs/reliability.md; exit 1 on a loss,
a duplicate, a violation or a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from bench.e2e import chaos_report, report  # noqa: E402
from bench.e2e.clients import insert_clients, login_and_fund  # noqa: E402
from bench.e2e.faults import (  # noqa: E402
    FaultResult,
    engine_serving_after,
    kill_service,
    read_timeline,
    restart_postgres,
    restart_redis,
    stream_after,
    wait_for,
)
from bench.e2e.load import LoadGenerator, Phase, Trader  # noqa: E402
from bench.e2e.loop import run_async  # noqa: E402
from bench.e2e.mix import OrderMix  # noqa: E402
from bench.e2e.stream import LatencyTracker, StreamStats, listen  # noqa: E402
from bench.e2e.supervisor import Cluster  # noqa: E402
from brokerx_core.invariants import find_violations  # noqa: E402

FAULTS = ("matching", "worker", "api", "redis", "postgres")
RECOVERY_LIMIT = 60.0  # seconds we wait for a part to recover before calling it failed


def log(message: str) -> None:
    print(f"chaos | {message}", flush=True)


async def inject(
    fault: str,
    cluster: Cluster,
    engine: AsyncEngine,
    outage: float,
) -> FaultResult:
    at = time.time()
    if fault in ("matching", "worker"):
        down = kill_service(cluster, fault)
        service_names = [fault]
    elif fault == "api":
        down = kill_service(cluster, "api-1")
        service_names = ["api-1"]
    elif fault == "redis":
        down = await asyncio.to_thread(restart_redis, cluster, outage)
        service_names = list(cluster.services)
    elif fault == "postgres":
        down = await asyncio.to_thread(restart_postgres, cluster, outage)
        service_names = list(cluster.services)
    else:
        raise ValueError(fault)
    result = FaultResult(fault, at, down)

    async def healthy() -> None:
        ok = await wait_for(
            lambda: all(cluster.services[name].healthy() for name in service_names),
            RECOVERY_LIMIT,
        )
        result.healthy_after = time.time() - at if ok is not None else None

    async def engine_serving() -> None:
        result.engine_after_db = await engine_serving_after(engine, at, RECOVERY_LIMIT)

    await asyncio.gather(healthy(), engine_serving())
    for when, name, code in cluster.crashes:
        if when >= at:
            result.notes.append(
                f"{name} exited by itself (code {code}) {when - at:.1f} s after the fault;"
                " restarted by the supervisor"
            )
    return result


async def restart_policy(cluster: Cluster) -> None:
    """Restart services that die by themselves, twice a second, until cancelled."""
    while True:
        for name in cluster.restart_crashed():
            log(f"{name} exited by itself: restarted")
        await asyncio.sleep(0.5)


async def audit(
    engine: AsyncEngine, traders: list[Trader], summary: dict[str, Any]
) -> dict[str, Any]:
    accepted = {cid: oid for t in traders for cid, oid in (t.accepted or {}).items()}
    ids = list(accepted.values())
    found: dict[str, str] = {}
    async with engine.connect() as conn:
        for start in range(0, len(ids), 5000):
            rows = await conn.execute(
                text("SELECT id::text, status FROM client_order WHERE id::text = ANY(:ids)"),
                {"ids": ids[start : start + 5000]},
            )
            found.update({row[0]: row[1] for row in rows})
        double_settled = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT reference_id FROM ledger_entry"
                    " WHERE kind IN ('buy', 'sell') GROUP BY reference_id"
                    " HAVING count(*) <> 2 OR count(DISTINCT kind) <> 2) x"
                )
            )
        ).scalar_one()
        overfilled = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM client_order o JOIN (SELECT order_id, sum(q) q FROM"
                    " (SELECT buy_order_id order_id, quantity q FROM trade UNION ALL"
                    "  SELECT sell_order_id, quantity FROM trade) f GROUP BY order_id) f"
                    " ON f.order_id = o.id WHERE f.q > o.quantity OR f.q <> o.filled_quantity"
                )
            )
        ).scalar_one()
        trades = (await conn.execute(text("SELECT count(*) FROM trade"))).scalar_one()
    lost = [oid for oid in ids if oid not in found]
    pending = [oid for oid in ids if found.get(oid) == "pending_new"]
    violations = await find_violations(engine, pending_grace_seconds=5)
    return {
        "accepted_orders": len(ids),
        "lost_orders": len(lost),
        "lost_examples": lost[:10],
        "pending_new_after_drain": len(pending),
        "trades": trades,
        "duplicate_trades": int(double_settled) + int(overfilled),
        "double_settled_trades": int(double_settled),
        "orders_with_fills_not_matching": int(overfilled),
        "violation_count": len(violations),
        "violations": [
            {"invariant": v.invariant, "subject": v.subject, "detail": v.detail}
            for v in violations[:30]
        ],
    }


async def run(args: argparse.Namespace, cluster: Cluster, summary: dict[str, Any]) -> None:
    engine = create_async_engine(cluster.database_url, pool_size=2, pool_pre_ping=True)
    stats = StreamStats()
    listeners: list[asyncio.Task[None]] = []
    try:
        api_url = f"http://127.0.0.1:{cluster.api_ports[0]}"
        made = await insert_clients(engine, args.clients, prefix="chaos")
        funded = await login_and_fund(api_url, made)
        log(f"{len(funded)} funded clients")
        ports = cluster.api_ports
        traders = [
            Trader(i, c.token, list(ports), random.Random(7000 + i), accepted={})
            for i, c in enumerate(funded)
        ]
        tracker = LatencyTracker()
        listeners = [
            asyncio.create_task(
                listen(lambda: ports, t.token, t.orders, tracker, stats, keep_report_times=True)
            )
            for t in traders
        ]
        generator = LoadGenerator(traders, OrderMix(), tracker, timeline=True)
        phase = Phase("chaos", "open", 3600.0, warmup=0.0, rate=args.rate, timeout=5.0)
        load = asyncio.create_task(generator.run(phase))
        policy = asyncio.create_task(restart_policy(cluster))
        results: list[FaultResult] = []
        await asyncio.sleep(args.settle)
        for fault in args.faults:
            log(f"fault: {fault}")
            result = await inject(fault, cluster, engine, args.outage)
            await asyncio.sleep(args.settle)
            # After the settle, not when the engine is seen serving: a report still on its
            # way then used to read as "never".
            result.engine_after_stream = stream_after(stats, result.at)
            results.append(result)
        generator.finish.set()
        outcome = await load
        policy.cancel()
        timeline = outcome.recorder.timeline or []
        (cluster.root / "timeline.json").write_text(json.dumps(timeline))
        for result in results:
            port = cluster.services["api-1"].port if result.fault == "api" else None
            settled = [v for v in (result.healthy_after, result.engine_after_db) if v is not None]
            end = result.at + (max(settled) if settled else RECOVERY_LIMIT) + 2.0
            read_timeline(result, timeline, end, port)
            log(f"{result.fault}: {json.dumps(result.as_dict())}")
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        listeners = []
        for trader in traders:
            trader.close()
        log("waiting for the engine to drain")
        deadline = time.time() + 60
        while time.time() < deadline:
            async with engine.connect() as conn:
                left = (
                    await conn.execute(
                        text("SELECT count(*) FROM client_order WHERE status = 'pending_new'")
                    )
                ).scalar_one()
            if left == 0:
                break
            await asyncio.sleep(0.5)
        summary["faults"] = [r.as_dict() for r in results]
        summary["load"] = {
            "rate": args.rate,
            "clients": len(traders),
            "seconds": round(outcome.measured_seconds, 1),
            "answers": outcome.recorder.errors(),
            "failovers": outcome.failovers,
            "unsent_backlog_at_end": outcome.unsent_backlog,
            "accepted_per_second": round(outcome.recorder.accepted / outcome.measured_seconds, 1),
            "outcomes": outcome.recorder.outcome_table(),
        }
        summary["audit"] = await audit(engine, traders, summary)
        log(f"audit: {json.dumps(summary['audit'])}")
    finally:
        for task in listeners:
            task.cancel()
        await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=2.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--data-dir", default=".devdata/chaos")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    args.faults = [f for f in args.faults.split(",") if f]
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {sorted(unknown)}")
    summary: dict[str, Any] = {
        "date": report.today(),
        "commit": report.commit() + ("+dirty" if report.dirty() else ""),
        "machine": report.machine(),
    }
    cluster = Cluster((REPO_ROOT / args.data_dir).absolute())
    try:
        log(f"starting PostgreSQL and Redis under {cluster.root}")
        cluster.start_servers()
        log("starting 2 × api, matching, worker")
        cluster.start_services()
        run_async(run(args, cluster, summary))
    finally:
        log("stopping everything")
        cluster.stop()
    verdict = chaos_report.verdict(summary)
    summary["verdict"] = verdict
    # --no-docs runs (experiments) leave the recorded results alone.
    out = cluster.root.with_suffix(".json") if args.no_docs else REPO_ROOT / "docs/bench/chaos.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if not args.no_docs:
        chaos_report.write(REPO_ROOT / "docs" / "reliability.md", summary)
    log(f"verdict: {verdict['text']}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
