"""Notifier micro-benchmark: reports/s it sustains and CPU per report (not a test).

    uv run --frozen python services/worker/perf/notifier_bench.py \
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] \
        [--redis-url redis://127.0.0.1:6379/13] [--scenario mix-off,fills-on,mix-on]
        [--reports 5000] [--rate 0] [--loop auto|asyncio|uvloop] [--repeat 3]

The notifier runs alone in a child process (`execution_notifier(ctx)`, the worker's own
background task, logging JSON at INFO to /dev/null as the worker does); this process sets
up a scratch database (`brokerx_notifier_bench`, migrated, dropped at the end), a real
SMTP server (aiosmtpd, in this process so its CPU is not counted), publishes execution
reports to `executions` and waits until the group has read and acknowledged them all.
The child's CPU time (user + system, psutil) over that window is divided by the reports.

`--rate 0` publishes the whole batch at once (a backlog: the sustainable ceiling);
`--rate R` publishes R reports/s (small batches, as under a steady load).

Scenarios (events of the reports, and whether their owners want confirmations):
- mix-off: the e2e bench's case, every owner has confirmations off; a mix of events
  (new 45 %, fill 20 %, partial_fill 15 %, canceled 15 %, replaced 5 %).
- fills-on: every report a fill whose owner wants its e-mail.
- mix-on: the mix above, owners want e-mails (about half the reports send one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import psutil
from aiosmtpd.controller import Controller
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from brokerx_core.messages import ExecutionReport, encode
from brokerx_core.migrate import upgrade_async
from brokerx_core.seed import seed_instruments
from brokerx_core.streams import EXECUTIONS_STREAM, NOTIFIER_GROUP

DB_NAME = "brokerx_notifier_bench"
MIX = (("new", 45), ("fill", 20), ("partial_fill", 15), ("canceled", 15), ("replaced", 5))
SCENARIOS = {"mix-off": (MIX, False), "fills-on": ((("fill", 1),), True), "mix-on": (MIX, True)}
CLIENTS = 200


@dataclass(frozen=True, slots=True)
class Owner:
    client_id: uuid.UUID
    account_id: uuid.UUID
    order_id: uuid.UUID


class _Sink:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.count += 1
        return "250 OK"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _asyncpg_url(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql+asyncpg", database=database)
    return parsed.render_as_string(hide_password=False)


async def _prepare_database(admin_url: str) -> str:
    admin = create_async_engine(_asyncpg_url(admin_url, "postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{DB_NAME}"'))
    await admin.dispose()
    url = _asyncpg_url(admin_url, DB_NAME)
    await upgrade_async(url)
    return url


async def _drop_database(admin_url: str) -> None:
    admin = create_async_engine(_asyncpg_url(admin_url, "postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    await admin.dispose()


async def _owners(engine: AsyncEngine, confirmations: bool) -> list[Owner]:
    """Fresh clients (preference as asked), each with an account and one order row."""
    owners = []
    async with engine.begin() as conn:
        await conn.execute(
            text("TRUNCATE email_message, client_order, account, client RESTART IDENTITY CASCADE")
        )
        for i in range(CLIENTS):
            owner = Owner(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
            await conn.execute(
                text(
                    "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                    " date_of_birth, address, status, verified_at, email_confirmations)"
                    " VALUES (:id, :email, 'x', 'Bench', 'Client', '1990-01-01', '1 Bench St',"
                    " 'active', now(), :on)"
                ),
                {"id": owner.client_id, "email": f"c{i}@bench.brokerx.local", "on": confirmations},
            )
            await conn.execute(
                text("INSERT INTO account (id, client_id) VALUES (:id, :c)"),
                {"id": owner.account_id, "c": owner.client_id},
            )
            await conn.execute(
                text(
                    "INSERT INTO client_order (id, account_id, symbol, side, type, quantity,"
                    " limit_price, time_in_force, status) VALUES"
                    " (:id, :a, 'AAPL', 'buy', 'limit', 100, 190.25, 'gtc', 'new')"
                ),
                {"id": owner.order_id, "a": owner.account_id},
            )
            owners.append(owner)
    return owners


def _reports(owners: list[Owner], mix: tuple[tuple[str, int], ...], count: int) -> list[str]:
    rng = random.Random(7)
    events, weights = [e for e, _ in mix], [w for _, w in mix]
    out = []
    for n in range(count):
        owner = owners[n % len(owners)]
        event = rng.choices(events, weights)[0]
        fills = event in ("fill", "partial_fill")
        report = ExecutionReport(
            report_id=f"{owner.order_id}:1:{n}:{event}",
            order_id=owner.order_id,
            account_id=owner.account_id,
            client_id=owner.client_id,
            symbol="AAPL",
            side="buy",
            event=event,
            status="filled" if event == "fill" else "partially_filled",
            fill_price=Decimal("190.25") if fills else None,
            fill_quantity=10 if fills else None,
            trade_id=uuid.uuid4() if fills else None,
            filled_quantity=10,
            leaves_quantity=90,
            avg_fill_price=Decimal("190.25") if fills else None,
            version=1,
            reason="requested" if event == "canceled" else None,
            correlation_id=uuid.uuid4().hex,
            ts=datetime.now(UTC),
        )
        out.append(encode(report)["data"])
    return out


async def _group_done(redis: Redis, total: int) -> bool:
    try:
        groups = await redis.xinfo_groups(EXECUTIONS_STREAM)
    except Exception:
        return False
    for group in groups:
        if group["name"] == NOTIFIER_GROUP.encode():
            return int(group["entries-read"] or 0) >= total and int(group["pending"]) == 0
    return False


async def _publish(redis: Redis, payloads: list[str], rate: float) -> None:
    chunk = 500 if rate <= 0 else max(1, int(rate / 100))
    start = time.perf_counter()
    for i in range(0, len(payloads), chunk):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        pipe = redis.pipeline(transaction=False)
        for data in payloads[i : i + chunk]:
            pipe.xadd(EXECUTIONS_STREAM, {"data": data})
        await pipe.execute()


async def _run_once(
    args: argparse.Namespace, db_url: str, smtp: _Sink, port: int, name: str
) -> str:
    mix, confirmations = SCENARIOS[name]
    engine = create_async_engine(db_url)
    owners = await _owners(engine, confirmations)
    payloads = _reports(owners, mix, args.reports)
    redis = Redis.from_url(args.redis_url)
    await redis.delete(EXECUTIONS_STREAM)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": args.redis_url,
        "SMTP_PORT": str(port),
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
        "BENCH_LOOP": args.loop,
    }
    if args.pythonpath:  # e.g. an older copy of brokerx_worker, to compare
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.pythonpath, env.get("PYTHONPATH")]))
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", env=env, stdout=subprocess.DEVNULL
    )
    try:
        while not await redis.exists(EXECUTIONS_STREAM):  # noqa: ASYNC110 (the child's group)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # imports and connections settle
        proc = psutil.Process(child.pid)
        sent_before, cpu_before = smtp.count, sum(proc.cpu_times()[:2])
        t0 = time.perf_counter()
        await _publish(redis, payloads, args.rate)
        while not await _group_done(redis, len(payloads)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        wall = time.perf_counter() - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu_before
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), 10)
        await redis.aclose()
    async with engine.connect() as conn:
        mails = (
            await conn.execute(text("SELECT count(*) FROM email_message WHERE sent_at IS NOT NULL"))
        ).scalar_one()
    await engine.dispose()
    return (
        f"{name:9s} loop={args.loop:7s} rate={args.rate or 'backlog'!s:8s} reports={len(payloads)}"
        f" mails={smtp.count - sent_before} (rows {mails}) wall={wall:.2f}s"
        f" -> {len(payloads) / wall:,.0f} reports/s, cpu {cpu:.2f}s ="
        f" {cpu / len(payloads) * 1e6:,.0f} us/report ({cpu / wall * 100:.0f}% of a core)"
    )


async def _main(args: argparse.Namespace) -> None:
    db_url = await _prepare_database(args.database_url)
    smtp, port = _Sink(), _free_port()
    controller = Controller(smtp, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        engine = create_async_engine(db_url)
        async with engine.begin() as conn:
            await seed_instruments(conn)
        await engine.dispose()
        for name in args.scenario.split(","):
            for _ in range(args.repeat):
                sys.stdout.write(await _run_once(args, db_url, smtp, port, name) + "\n")
                sys.stdout.flush()
    finally:
        controller.stop()
        await _drop_database(args.database_url)


def _child() -> None:
    """The notifier as the worker runs it (its settings come from the environment)."""
    from brokerx_core.db import create_sessionmaker
    from brokerx_core.observability.logging import configure_logging
    from brokerx_core.redis import create_redis
    from brokerx_worker.database import worker_engine
    from brokerx_worker.jobs.notifier import execution_notifier
    from brokerx_worker.settings import WorkerSettings

    async def run() -> None:
        settings = WorkerSettings()
        configure_logging("worker", settings.log_level, json=settings.log_json)
        engine = worker_engine(settings)
        ctx = {
            "settings": settings,
            "engine": engine,
            "sessionmaker": create_sessionmaker(engine),
            "streams": create_redis(settings),
        }
        await execution_notifier(ctx)

    loop = os.environ.get("BENCH_LOOP", "auto")
    if loop == "uvloop":
        import uvloop

        uvloop.run(run())
    elif loop == "asyncio":
        asyncio.run(run())
    else:  # what the worker's entry point does
        from brokerx_worker import __main__ as entry

        runner = getattr(entry, "run_loop", None)
        runner(run()) if runner is not None else asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    parser.add_argument("--scenario", default="mix-off,fills-on,mix-on")
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=0.0, help="reports/s; 0 = one backlog")
    parser.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--pythonpath", default="", help="prepended for the notifier process")
    args = parser.parse_args()
    if args.child:
        _child()
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
