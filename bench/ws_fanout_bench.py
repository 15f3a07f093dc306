"""Live-stream fan-out under load (not a test).

    uv run python bench/ws_fanout_bench.py [--idle 1000] [--reports 200] [--json-out PATH]
                                           [--doc docs/ws-fanout.md]

Runs on TEST_DATABASE_URL / TEST_REDIS_URL (else the embedded dev servers) in a fresh
database `brokerx_bench_ws`; FLUSHES the Redis database it is given.

One api process (`uvicorn brokerx_api.app:create_app`, a real subprocess) serves:
- a normal client subscribed to its orders, whose execution reports are timed from the
  XADD to `executions` (as the engine does it) to their arrival on the client's socket;
- in the loaded phase also `--idle` authenticated, idle connections (subscribed to their
  own orders: nothing for them) and one slow reader that subscribes to every quote, book
  and trade and never reads, while market data flows (`--md-rate` updates per second for
  each of the eight symbols, ten levels a side and five trades each).

Requirement: the load must not delay the normal client's reports by more than 100 ms
(p99 and max of the loaded phase against the baseline). Prints JSON; `--doc` rewrites
docs/ws-fanout.md with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench.e2e import report  # noqa: E402
from bench.ws_fanout_doc import render_doc  # noqa: E402
from brokerx_api.auth.deps import token_service_from  # noqa: E402
from brokerx_api.settings import ApiSettings  # noqa: E402
from brokerx_core.messages import encode  # noqa: E402
from brokerx_core.migrate import upgrade_async  # noqa: E402
from brokerx_core.observability.health import HEARTBEAT_KEY  # noqa: E402
from brokerx_core.seed import INSTRUMENTS, seed_instruments  # noqa: E402
from brokerx_core.streams import EXECUTIONS_STREAM, MARKETDATA_STREAM  # noqa: E402
from tests.support.live import (  # noqa: E402
    execution_report,
    market_update,
    small_receive_buffer_socket,
)
from tests.support.servers import discover  # noqa: E402
from tests.support.smtp import free_port  # noqa: E402

DATABASE = "brokerx_bench_ws"
SYMBOLS = [i.symbol for i in INSTRUMENTS]
BUDGET_MS = 100.0
BACKED_UP = 100  # conflated messages that show the slow reader's socket is full


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft open-files limit (inherited by the api subprocess); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class BenchClient:
    client_id: uuid.UUID
    account_id: uuid.UUID
    email: str


async def create_clients(engine: AsyncEngine, count: int) -> list[BenchClient]:
    """`count` active clients with an account, in one transaction (bulk: the factories
    insert one client per round trip)."""
    clients = [
        BenchClient(uuid.uuid4(), uuid.uuid4(), f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com")
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                " date_of_birth, address, status, verified_at)"
                " VALUES (:id, :email, 'x', 'Bench', 'Client', :dob, 'Bench', 'active', now())"
            ),
            [{"id": c.client_id, "email": c.email, "dob": date(1990, 1, 1)} for c in clients],
        )
        await conn.execute(
            text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
            [{"id": c.account_id, "client": c.client_id} for c in clients],
        )
    return clients


async def issue_tokens(
    engine: AsyncEngine, settings: ApiSettings, clients: list[BenchClient]
) -> list[str]:
    """A live login session and access token per client."""
    sessions = [uuid.uuid4() for _ in clients]
    expires = datetime.now(UTC) + timedelta(hours=2)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO auth_session (id, client_id, expires_at) VALUES (:id, :c, :e)"),
            [
                {"id": s, "c": c.client_id, "e": expires}
                for s, c in zip(sessions, clients, strict=True)
            ],
        )
    tokens = token_service_from(settings)
    return [tokens.issue_access(c.client_id, s) for s, c in zip(sessions, clients, strict=True)]


class ApiProcess:
    """The api under uvicorn, as `brokerx-api` runs it (one worker)."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.port = free_port()
        self.log = Path(f"/tmp/brokerx-bench-ws-api-{os.getpid()}.log")
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "WARNING",
            "LOG_JSON": "true",
        }
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "uvicorn", "brokerx_api.app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log",
                "--ws-ping-interval", "20", "--ws-ping-timeout", "20", "--log-level", "warning",
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"api exited; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"http://127.0.0.1:{self.port}/health", timeout=1)
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"api did not start; see {self.log}")

    async def metrics(self) -> dict[str, float]:
        """The brokerx_ws_* and brokerx_stream_lag samples of /metrics."""
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"http://127.0.0.1:{self.port}/metrics")).text
        samples: dict[str, float] = {}
        for line in body.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith(("brokerx_ws_", "brokerx_stream_lag")) and "_created" not in name:
                samples[name] = float(value)
        return samples

    async def dropped(self, reason: str) -> float:
        key = f'brokerx_ws_messages_dropped_total{{reason="{reason}"}}'
        return (await self.metrics()).get(key, 0.0)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def open_authenticated(url: str, token: str, **kwargs: Any) -> ClientConnection:
    ws = await connect(url, open_timeout=30, **kwargs)
    await ws.send(json.dumps({"action": "auth", "token": token}))
    assert json.loads(await ws.recv())["type"] == "authenticated"
    return ws


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == kind:
            return message  # type: ignore[no-any-return]


async def measure(
    redis: Redis, ws: ClientConnection, client: BenchClient, reports: int
) -> list[float]:
    """XADD→receive latency (ms) of `reports` execution reports, one at a time."""
    rng = random.Random(7)
    latencies: list[float] = []
    for _ in range(reports):
        report = execution_report(client, event="fill")
        started = time.perf_counter()
        await redis.xadd(EXECUTIONS_STREAM, encode(report))  # type: ignore[arg-type]
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message.get("report_id") == report.report_id:
                break
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(rng.uniform(0.005, 0.02))  # reports arrive one by one
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def market_data_flow(redis: Redis, rate: float, stop: asyncio.Event) -> int:
    """XADD updates for every symbol `rate` times a second until `stop`; how many."""
    sent = 0
    interval = 1 / rate
    while not stop.is_set():
        async with redis.pipeline(transaction=False) as pipe:
            for symbol in SYMBOLS:
                update = market_update(
                    symbol,
                    bid_size=random.randint(1, 1000),
                    levels=10,
                    trades=[("100.00", random.randint(1, 500)) for _ in range(5)],
                )
                pipe.xadd(MARKETDATA_STREAM, encode(update), maxlen=100_000, approximate=True)  # type: ignore[arg-type]
            await pipe.execute()
        sent += len(SYMBOLS)
        await asyncio.sleep(interval)
    return sent


async def keep_engine_alive(redis: Redis, stop: asyncio.Event) -> None:
    """The engine's heartbeat, so the stream status stays `ok` (no engine runs here)."""
    while not stop.is_set():
        await redis.set(HEARTBEAT_KEY.format(service="matching"), "bench", ex=10)
        await asyncio.sleep(2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    fd_limit = raise_fd_limit(args.idle * 2 + 1000)
    servers = discover(DATABASE)
    admin = create_async_engine(servers.admin_database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    await upgrade_async(servers.database_url)
    engine = create_async_engine(servers.database_url)
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    stop = asyncio.Event()
    heartbeat = asyncio.create_task(keep_engine_alive(redis, stop))
    api = ApiProcess(servers.database_url, servers.redis_url)
    sockets: list[ClientConnection] = []
    try:
        async with engine.begin() as conn:
            await seed_instruments(conn)
        # Tokens as long-lived as the sessions (2 h): a connection ends when its token does.
        urls = {"database_url": servers.database_url, "redis_url": servers.redis_url}
        settings = ApiSettings(**urls, access_token_ttl_seconds=7200)
        clients = await create_clients(engine, args.idle + 2)
        tokens = await issue_tokens(engine, settings, clients)
        await api.start()
        url = f"ws://127.0.0.1:{api.port}/api/v1/stream"

        normal = await open_authenticated(url, tokens[0])
        sockets.append(normal)
        await normal.send(json.dumps({"action": "subscribe", "orders": True}))
        await until(normal, "subscribed")
        await measure(redis, normal, clients[0], 20)  # warm-up
        baseline = await measure(redis, normal, clients[0], args.reports)

        started = time.perf_counter()
        semaphore = asyncio.Semaphore(100)

        async def idle(token: str) -> ClientConnection:
            async with semaphore:
                ws = await open_authenticated(url, token)
                await ws.send(json.dumps({"action": "subscribe", "orders": True}))
                await until(ws, "subscribed")
                return ws

        sockets += await asyncio.gather(*(idle(t) for t in tokens[2:]))
        connect_seconds = time.perf_counter() - started
        slow = await open_authenticated(
            url,
            tokens[1],
            sock=small_receive_buffer_socket(api.port),
            max_queue=1,
            compression=None,
            close_timeout=1,
        )
        sockets.append(slow)
        await slow.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "quotes": SYMBOLS,
                    "books": SYMBOLS,
                    "trades": SYMBOLS,
                    "orders": True,
                }
            )
        )
        flow_stop = asyncio.Event()
        md_started = time.perf_counter()
        flow = asyncio.create_task(market_data_flow(redis, args.md_rate, flow_stop))
        # Measure only once the slow reader is backed up for good: the api keeps
        # conflating its quotes and books.
        deadline = time.monotonic() + 120
        while await api.dropped("conflated") < BACKED_UP:
            if time.monotonic() > deadline:
                raise RuntimeError("the slow reader never backed up")
            await asyncio.sleep(0.5)
        loaded = await measure(redis, normal, clients[0], args.reports)
        flow_stop.set()
        md_updates = await flow
        md_seconds = time.perf_counter() - md_started
        metrics = await api.metrics()
    finally:
        stop.set()
        await heartbeat
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        await api.stop()
        await redis.aclose()
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
        await admin.dispose()

    base, load = summary(baseline), summary(loaded)
    added_p99 = round(load["p99_ms"] - base["p99_ms"], 2)
    added_max = round(load["max_ms"] - base["max_ms"], 2)
    return {
        "date": datetime.now(UTC).date().isoformat(),
        "commit": report.commit() + ("+dirty" if report.dirty() else ""),
        "machine": (
            f"{os.cpu_count()} vCPU, {platform.platform()}, Python {platform.python_version()}"
        ),
        "fd_limit": fd_limit,
        "idle_connections": args.idle,
        "connect_seconds": round(connect_seconds, 2),
        "reports_per_phase": args.reports,
        "md_updates_per_second": round(md_updates / md_seconds),
        "md_updates_sent": md_updates,
        "baseline": base,
        "loaded": load,
        "added_delay_p99_ms": added_p99,
        "added_delay_max_ms": added_max,
        "api_metrics": metrics,
        "ok": added_p99 <= BUDGET_MS and added_max <= BUDGET_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--md-rate", type=float, default=50.0, help="updates/s per symbol")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--doc", type=Path, help="rewrite this markdown file with the results")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.doc:
        args.doc.write_text(render_doc(result, budget_ms=BUDGET_MS))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
