"""Sustained throughput of the matching service (not a test).

    uv run python bench/matching_bench.py [--orders 50000] [--traders 200] [--batch-size 500]
    uv run python bench/matching_bench.py --rate 150,1000,2000 [--duration 20]

Runs on TEST_DATABASE_URL / TEST_REDIS_URL (else the embedded dev servers) in a fresh
database `brokerx_bench_matching`; FLUSHES the Redis database it is given.

1. `python -m brokerx_matching` starts and takes the four shards; then it is paused
   (SIGSTOP).
2. N orders are written as intake writes them (reservations, `pending_new` rows,
   outbox rows) and every command is XADDed: the streams hold the whole load.
3. The service is resumed (SIGCONT) and timed until every stream entry is acknowledged.
   Each batch commits in PostgreSQL before its XACK, so "acknowledged" = "persisted,
   reports and market data published".

With `--rate`, an open loop instead (what the service sees behind the api): the orders
of each rate are written first (`pending_new` rows the running service does not look
at), then their commands are XADDed at that rate, a few per 2 ms tick, so batches are as
small as the load makes them; reported per rate: the service's CPU per order (the cost
that matters on a shared 2-core machine) and the mean batch size.

The flow: five symbols over the four shards, limit orders within 1 % of the reference
(a third crossing it by up to 0.5 %, so about half the orders trade), 5 % market orders,
10 % ioc, 5 % fok. Invariants are checked at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import time
from decimal import Decimal
from pathlib import Path

import psutil
from matching_setup import bench_servers, matching_process, outstanding, scrape, wait_until
from sqlalchemy import text

from brokerx_core.invariants import find_violations
from tests.support.order_flow import SYMBOLS, create_traders
from tests.support.orders_bulk import OrderSpec, insert_orders_bulk
from tests.support.orders_sql import publish

CENT = Decimal("0.01")


class CpuMeter:
    """CPU time used by the service process and by its shard connections' backends
    (robust to a busy machine, unlike wall time)."""

    def __init__(self, pid: int, backends: list[int]) -> None:
        self.processes = [psutil.Process(pid), *(psutil.Process(b) for b in backends)]
        self.start = [self._cpu(p) for p in self.processes]

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    def used(self) -> tuple[float, float]:
        spent = [self._cpu(p) - s for p, s in zip(self.processes, self.start, strict=True)]
        return spent[0], sum(spent[1:])


async def shard_backends(engine) -> list[int]:  # type: ignore[no-untyped-def]
    """PIDs of the PostgreSQL backends serving the matching service's shard connections."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'matching-shard'"
                " AND datname = current_database()"
            )
        )
        return [pid for (pid,) in rows]


def order_specs(traders: list, count: int, seed: int) -> list[OrderSpec]:  # type: ignore[type-arg]
    rng = random.Random(seed)
    symbols = list(SYMBOLS)
    specs = []
    for _ in range(count):
        trader = rng.choice(traders)
        symbol = rng.choice(symbols)
        ref = SYMBOLS[symbol]
        side = rng.choice(("buy", "sell"))
        quantity = rng.randint(1, 100)
        if rng.random() < 0.05:
            specs.append(OrderSpec(trader.account_id, symbol, side, quantity))
            continue
        offset = Decimal(rng.randint(0, 100)) / 10_000
        if rng.random() < 0.33:
            price = ref * (1 + offset / 2) if side == "buy" else ref * (1 - offset / 2)
        else:
            price = ref * (1 - offset) if side == "buy" else ref * (1 + offset)
        tif = rng.choices(("day", "gtc", "ioc", "fok"), weights=(60, 25, 10, 5))[0]
        specs.append(
            OrderSpec(trader.account_id, symbol, side, quantity, price.quantize(CENT), tif)
        )
    return specs


async def write_orders(bench, specs: list[OrderSpec]) -> list:  # type: ignore[no-untyped-def,type-arg]
    sent = []
    for start in range(0, len(specs), 5_000):
        async with bench.engine.begin() as conn:
            sent += await insert_orders_bulk(conn, specs[start : start + 5_000])
    return sent


async def paced(bench, process, traders, rate: float, args) -> None:  # type: ignore[no-untyped-def]
    """Open loop at `rate` commands/s for `args.duration` seconds; prints one line."""
    assert process.process is not None
    count = int(rate * args.duration)
    sent = await write_orders(bench, order_specs(traders, count, args.seed + int(rate)))
    before = await scrape(process.port)
    cpu = CpuMeter(process.process.pid, await shard_backends(bench.engine))
    loop = asyncio.get_running_loop()
    started = loop.time()
    done = 0
    while done < len(sent):
        due = min(len(sent), int((loop.time() - started) * rate) + 1)
        if due > done:
            await publish(bench.redis, sent[done:due])
            done = due
        await asyncio.sleep(0.002)
    sending = loop.time() - started
    await wait_until(lambda: outstanding(bench.redis, 4), lambda n: n == 0, within=600)
    elapsed = loop.time() - started
    service_cpu, database_cpu = cpu.used()
    after = await scrape(process.port)
    batches = after["brokerx_engine_batch_seconds_count"] - before.get(
        "brokerx_engine_batch_seconds_count", 0
    )
    entries = after["brokerx_engine_batch_size_sum"] - before.get(
        "brokerx_engine_batch_size_sum", 0
    )
    print(
        f"rate {rate:>6,.0f}/s: {count} orders sent in {sending:.1f}s, drained after"
        f" {elapsed:.1f}s; matching CPU {1e6 * service_cpu / count:,.0f} µs/order"
        f" ({100 * service_cpu / elapsed:.0f} % of a core), PG backends"
        f" {1e6 * database_cpu / count:,.0f} µs/order; {batches:.0f} batches,"
        f" mean {entries / max(batches, 1):.1f} entries"
    )


async def main(args: argparse.Namespace) -> None:
    async with bench_servers("brokerx_bench_matching") as bench:
        traders = await create_traders(
            bench.engine, args.traders, cash=1_000_000_000, shares=10_000_000
        )
        process = matching_process(bench, "bench", batch_size=args.batch_size)
        process.start(profile=args.profile)
        if args.rate:
            try:
                await process.wait_serving(4)
                for rate in args.rate:
                    await paced(bench, process, traders, rate, args)
            finally:
                await process.terminate()
            violations = await find_violations(bench.engine, pending_grace_seconds=0)
            print(f"invariant violations: {len(violations)}")
            for violation in violations[:10]:
                print(f"  {violation}")
            return
        try:
            await process.wait_serving(4)
            assert process.process is not None
            os.kill(process.process.pid, signal.SIGSTOP)
            specs = order_specs(traders, args.orders, args.seed)
            loaded = time.perf_counter()
            sent = await write_orders(bench, specs)
            for start in range(0, len(sent), 10_000):
                await publish(bench.redis, sent[start : start + 10_000])
            print(f"{len(sent)} orders written and XADDed in {time.perf_counter() - loaded:.1f}s")
            assert await outstanding(bench.redis, 4) == len(sent)

            cpu = CpuMeter(process.process.pid, await shard_backends(bench.engine))
            started = time.perf_counter()
            os.kill(process.process.pid, signal.SIGCONT)
            await wait_until(lambda: outstanding(bench.redis, 4), lambda n: n == 0, within=600)
            elapsed = time.perf_counter() - started
            service_cpu, database_cpu = cpu.used()
            metrics = await scrape(process.port)
        finally:
            if process.process is not None:
                os.kill(process.process.pid, signal.SIGCONT)
            await process.terminate()
        async with bench.engine.connect() as conn:
            rows = await conn.execute(text("SELECT status, count(*) FROM client_order GROUP BY 1"))
            stats = {status: count for status, count in rows}
            trades = (await conn.execute(text("SELECT count(*) FROM trade"))).scalar_one()
        violations = await find_violations(bench.engine, pending_grace_seconds=0)
        batches = metrics.get("brokerx_engine_batch_seconds_count", 0)
        print(
            f"\n{len(sent)} orders in {elapsed:.2f}s = {len(sent) / elapsed:,.0f} orders/s"
            f" ({trades} trades = {trades / elapsed:,.0f}/s), batch_size={args.batch_size}"
        )
        if batches:
            size = metrics["brokerx_engine_batch_size_sum"] / batches
            seconds = metrics["brokerx_engine_batch_seconds_sum"] / batches
            print(f"{batches:.0f} batches: mean {size:.0f} entries, mean {1000 * seconds:.1f} ms")
        print(
            f"CPU: matching process {service_cpu:.2f}s ({len(sent) / service_cpu:,.0f} orders"
            f" per CPU-second), its PostgreSQL backends {database_cpu:.2f}s,"
            f" on {os.cpu_count()} CPUs shared with Redis, PostgreSQL and other work"
        )
        print(f"final states: {stats}")
        print(f"invariant violations: {len(violations)}")
        for violation in violations[:10]:
            print(f"  {violation}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--traders", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write the service's cProfile stats here")
    parser.add_argument(
        "--rate",
        type=lambda text: [float(r) for r in text.split(",")],
        help="open loop: commands/s, comma-separated for several phases (e.g. 150,1000,2000)",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per --rate phase")
    asyncio.run(main(parser.parse_args()))
