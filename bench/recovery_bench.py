"""Time for the matching service to serve again after a SIGKILL (not a test).

    uv run python bench/recovery_bench.py [--resting 100000] [--kills 3]

Runs on TEST_DATABASE_URL / TEST_REDIS_URL (else the embedded dev servers) in a fresh
database `brokerx_bench_recovery`; FLUSHES the Redis database it is given.

`--resting` open orders (bids below the reference, asks above, over five symbols and
the four shards) are in PostgreSQL. The service is started, then repeatedly SIGKILLed
and restarted at once; right after each kill a buy crossing AAPL's best ask is placed.
"Serving again" = that order is filled: a new process started, took the shard's lock,
rebuilt every book from PostgreSQL, rewrote the read models and processed a command.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from decimal import Decimal

from matching_setup import bench_servers, matching_process, wait_until
from sqlalchemy import text

from brokerx_core.invariants import find_violations
from tests.support.order_flow import SYMBOLS, create_traders
from tests.support.orders_bulk import OrderSpec, insert_orders_bulk
from tests.support.orders_sql import place_order, publish

CENT = Decimal("0.01")
PROBES = ("AAPL", "META", "AMZN", "MSFT")  # one symbol per shard


def resting_specs(traders: list, count: int, seed: int) -> list[OrderSpec]:  # type: ignore[type-arg]
    """Orders that never cross: bids 0.1–5 % under the reference, asks as far above."""
    rng = random.Random(seed)
    symbols = list(SYMBOLS)
    specs = []
    for _ in range(count):
        symbol = rng.choice(symbols)
        side = rng.choice(("buy", "sell"))
        offset = Decimal(rng.randint(10, 500)) / 10_000
        ref = SYMBOLS[symbol]
        price = ref * (1 - offset) if side == "buy" else ref * (1 + offset)
        specs.append(
            OrderSpec(
                rng.choice(traders).account_id,
                symbol,
                side,
                rng.randint(1, 100),
                price.quantize(CENT),
                rng.choice(("day", "gtc")),
            )
        )
    return specs


async def main(args: argparse.Namespace) -> None:
    async with bench_servers("brokerx_bench_recovery") as bench:
        traders = await create_traders(
            bench.engine, args.traders, cash=1_000_000_000, shares=10_000_000
        )
        specs = resting_specs(traders, args.resting, args.seed)
        for start in range(0, len(specs), 10_000):
            async with bench.engine.begin() as conn:
                await insert_orders_bulk(conn, specs[start : start + 10_000], resting=True)
        async with bench.engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        buyer = traders[0]
        process = matching_process(bench, "recovery")
        started = time.perf_counter()
        process.start()
        await process.wait_serving(4, timeout=120)
        cold = time.perf_counter() - started
        print(f"{args.resting} resting orders; cold start to /health serving 4 shards: {cold:.2f}s")
        first: list[float] = []
        every: list[float] = []
        try:
            for kill in range(args.kills):
                process.kill()
                killed = time.perf_counter()
                process.start()
                # One crossing buy per shard (AAPL 0, META 1, AMZN 2, MSFT 3).
                sent = []
                async with bench.engine.begin() as conn:
                    for symbol in PROBES:
                        best_ask = (
                            await conn.execute(
                                text(
                                    "SELECT min(limit_price) FROM client_order"
                                    " WHERE symbol = :s AND side = 'sell'"
                                    " AND status IN ('new', 'partially_filled')"
                                ),
                                {"s": symbol},
                            )
                        ).scalar_one()
                        sent.append(
                            await place_order(
                                conn, buyer.account_id, symbol, "buy", 1, limit_price=best_ask
                            )
                        )
                await publish(bench.redis, sent)
                filled_at: dict[str, float] = {}

                async def probe(sent=sent, filled_at=filled_at, killed=killed) -> int:  # type: ignore[no-untyped-def]
                    async with bench.engine.connect() as conn:
                        rows = await conn.execute(
                            text(
                                "SELECT symbol FROM client_order"
                                " WHERE id = ANY(:ids) AND status = 'filled'"
                            ),
                            {"ids": [s.order_id for s in sent]},
                        )
                        for (symbol,) in rows:
                            filled_at.setdefault(symbol, time.perf_counter() - killed)
                    return len(filled_at)

                await wait_until(probe, lambda n: n == len(PROBES), within=60)
                first.append(min(filled_at.values()))
                every.append(max(filled_at.values()))
                detail = ", ".join(f"{s} {filled_at[s]:.2f}s" for s in PROBES)
                print(f"kill {kill + 1}: first order filled after SIGKILL: {detail}")
                await process.wait_serving(4, timeout=60)
        finally:
            await process.terminate()
        violations = await find_violations(bench.engine, pending_grace_seconds=0)
        print(
            f"\nSIGKILL → first shard serving (a new order filled): median"
            f" {statistics.median(first):.2f}s, max {max(first):.2f}s;"
            f" every shard serving: median {statistics.median(every):.2f}s,"
            f" max {max(every):.2f}s ({len(every)} kills); invariant violations: {len(violations)}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resting", type=int, default=100_000)
    parser.add_argument("--traders", type=int, default=200)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
