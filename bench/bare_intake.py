"""The bare intake bound: the intake transaction + XADD with no HTTP in front (not a test).

    uv run python bench/bare_intake.py --database-url URL --redis-url URL \
        [--concurrency 200] [--duration 20] [--warmup 5] [--json-out PATH]

Each of `concurrency` workers loops as fast as answers come, exactly as a closed-loop
HTTP client would, but calls the api's own intake path directly: parse the body
(`brokerx_core.intake.parse_new_order`), then `IntakeBatcher.place` — the group commit
the api uses (one call of an intake function per batch — `intake_place_orders`, or
`intake_place_batch` from 8 orders — then the XADDs), with the
api's INTAKE_CONNECTIONS and INTAKE_BATCH_MAX. Same order mix (new limit orders around
the reference price, a `client_order_id` on each), own funded accounts. What the api
adds on top of this — HTTP parsing, routing, auth, dependency injection, JSON
rendering, logging, metrics — is the difference between this bound and the end-to-end
rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg  # noqa: E402

from bench.e2e.clients import insert_clients  # noqa: E402
from bench.e2e.loop import run_async  # noqa: E402
from bench.e2e.mix import NEW_ORDERS_ONLY, ClientOrders, OrderMix  # noqa: E402
from bench.e2e.stats import percentiles  # noqa: E402
from brokerx_core import intake  # noqa: E402
from brokerx_core.db import create_engine  # noqa: E402
from brokerx_core.intake.batcher import IntakeBatcher  # noqa: E402
from brokerx_core.redis import create_redis  # noqa: E402
from brokerx_core.seed import credit_deposit  # noqa: E402
from brokerx_core.settings import BrokerXSettings  # noqa: E402

CASH = Decimal("2000000.00")


async def run(args: argparse.Namespace) -> dict[str, object]:
    settings = BrokerXSettings(
        database_url=args.database_url, redis_url=args.redis_url, service_name="bare-intake"
    )
    rules = intake.TradingRules.from_settings(settings)
    engine = create_engine(settings)
    redis = create_redis(settings)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(settings.libpq_url)

    batcher = IntakeBatcher(
        connect, redis, lambda: rules, max_batch=args.batch_max, connections=args.connections
    )
    await batcher.start()
    try:
        clients = await insert_clients(engine, args.concurrency, prefix=f"bare{args.seed}")
        async with engine.begin() as conn:
            for client in clients:
                await credit_deposit(conn, client.account_id, CASH)
        mix = OrderMix(NEW_ORDERS_ONLY)
        latencies: list[float] = []
        outcomes: Counter[str] = Counter()
        measuring = False
        stop = asyncio.Event()

        async def worker(index: int) -> None:
            rng = random.Random(args.seed * 100_000 + index)
            account_id = clients[index].account_id
            orders = ClientOrders()
            while not stop.is_set():
                planned = mix.next(orders, rng)
                started = time.perf_counter()
                try:
                    order = intake.parse_new_order(json.loads(json.dumps(planned.body)))
                    await batcher.place(account_id, order)
                    outcome = "accepted"
                except intake.IntakeError as exc:
                    outcome = exc.code
                if measuring:
                    outcomes[outcome] += 1
                    if outcome == "accepted":
                        latencies.append(time.perf_counter() - started)

        tasks = [asyncio.create_task(worker(i)) for i in range(args.concurrency)]
        await asyncio.sleep(args.warmup)
        measuring = True
        began = time.perf_counter()
        await asyncio.sleep(args.duration)
        measuring = False
        elapsed = time.perf_counter() - began
        stop.set()
        await asyncio.wait(tasks, timeout=30)
        return {
            "concurrency": args.concurrency,
            "seconds": round(elapsed, 2),
            "accepted": outcomes["accepted"],
            "accepted_per_second": round(outcomes["accepted"] / elapsed, 1),
            "latency_ms": percentiles(latencies),
            "outcomes": dict(outcomes),
            "intake_connections": args.connections,
            "intake_batch_max": args.batch_max,
        }
    finally:
        await batcher.stop()
        await redis.aclose()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=2, help="as INTAKE_CONNECTIONS")
    parser.add_argument("--batch-max", type=int, default=256, help="as INTAKE_BATCH_MAX")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    result = run_async(run(args))  # the api's GC settings, as in the e2e run
    text = json.dumps(result, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
