"""Throughput and latency of the pure order book (not a test).

    uv run python bench/book_bench.py [--ops 1000000] [--json-out PATH]

A book is built to about 10,000 resting orders over about 500 price levels, then a
fixed-seed mix is replayed: ~70 % limit orders around the mid (about a third of them
crossing), ~25 % cancels of resting orders, ~5 % market orders with a collar.

The ops are generated beforehand by driving a scratch book (so cancels target orders
that really rest and crossing prices follow the moving touch); the measured runs replay
the same calls on fresh books, which behave identically because the book is
deterministic. Untimed runs (only the loop around the calls) give the throughput; one
run with perf_counter_ns around every op gives the latency distribution (its own
throughput is reported too, so the measurement overhead is visible).

Ids and accounts are uuid.UUID, as the engine passes them (`--int-ids` for comparison:
UUID hashing and equality are Python-level and cost about a quarter of the time).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable, Hashable
from typing import Any

from brokerx_matching.book import OrderBook, Side, TimeInForce

MID = 100_000
BAND = 250  # passive orders land within BAND ticks of the mid: ~2 * BAND levels
TARGET_RESTING = 10_000
ACCOUNTS = 1_000

Op = tuple[str, tuple[Any, ...]]


class _LiveIds:
    """Resting ids with O(1) random pick and removal, to aim cancels at real orders."""

    def __init__(self) -> None:
        self.ids: list[Hashable] = []
        self.pos: dict[Hashable, int] = {}

    def add(self, order_id: Hashable) -> None:
        self.pos[order_id] = len(self.ids)
        self.ids.append(order_id)

    def remove(self, order_id: Hashable) -> None:
        i = self.pos.pop(order_id)
        last = self.ids.pop()
        if i < len(self.ids):
            self.ids[i] = last
            self.pos[last] = i


def generate(n_ops: int, seed: int, int_ids: bool) -> tuple[list[Op], list[Op], dict[str, Any]]:
    rng = random.Random(seed)
    counter = 0

    def new_id() -> Hashable:
        nonlocal counter
        counter += 1
        return counter if int_ids else uuid.UUID(int=rng.getrandbits(128), version=4)

    accounts: list[Hashable] = (
        list(range(ACCOUNTS))
        if int_ids
        else [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(ACCOUNTS)]
    )
    book = OrderBook()
    live = _LiveIds()
    stats = {"limit": 0, "limit_crossing": 0, "cancel": 0, "market": 0, "fills": 0}

    def apply(op: Op) -> None:
        kind, args = op
        if kind == "cancel":
            book.cancel(*args)
            live.remove(args[0])
            return
        result = book.submit_limit(*args) if kind == "limit" else book.submit_market(*args)
        stats["fills"] += len(result.fills)
        for fill in result.fills:
            if fill.resting_leaves_quantity == 0:
                live.remove(fill.resting_order_id)
        if result.leaves_quantity:
            live.add(result.order_id)

    def mid() -> int:
        bid, ask = book.best_bid(), book.best_ask()
        if bid and ask:
            return (bid[0] + ask[0]) // 2
        return bid[0] + 1 if bid else ask[0] - 1 if ask else MID

    def passive_limit() -> Op:
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        m = mid()
        if side is Side.BUY:
            ask = book.best_ask()
            price = m - int(rng.triangular(0, BAND, 0))
            if ask is not None:
                price = min(price, ask[0] - 1)
        else:
            bid = book.best_bid()
            price = m + int(rng.triangular(0, BAND, 0))
            if bid is not None:
                price = max(price, bid[0] + 1)
        tif = TimeInForce.GTC if rng.random() < 0.3 else TimeInForce.DAY
        return "limit", (new_id(), rng.choice(accounts), side, rng.randint(1, 100), price, tif)

    setup: list[Op] = []
    while len(book) < TARGET_RESTING:
        op = passive_limit()
        setup.append(op)
        apply(op)
    start_resting = len(book)
    start_levels = len(book.depth(10**9).bids) + len(book.depth(10**9).asks)

    ops: list[Op] = []
    sizes: list[int] = []
    for i in range(n_ops):
        if i % 1000 == 0:
            sizes.append(len(book))
        r = rng.random()
        if r < 0.70:
            stats["limit"] += 1
            if rng.random() < 1 / 3:
                stats["limit_crossing"] += 1
                side = Side.BUY if rng.random() < 0.5 else Side.SELL
                touch = book.best_ask() if side is Side.BUY else book.best_bid()
                base = touch[0] if touch else mid()
                offset = rng.randrange(3)
                price = base + offset if side is Side.BUY else base - offset
                tif = rng.choice(
                    (TimeInForce.DAY, TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK)
                )
                # Size the crossing orders from the book's size, so that what they take
                # balances what passive orders add and the book stays near its target.
                max_qty = min(2_000, max(20, 300 + (len(book) - TARGET_RESTING) // 2))
                qty = rng.randint(1, max_qty)
                op = ("limit", (new_id(), rng.choice(accounts), side, qty, price, tif))
            else:
                op = passive_limit()
        elif r < 0.95 and live.ids:
            stats["cancel"] += 1
            op = ("cancel", (rng.choice(live.ids),))
        else:
            stats["market"] += 1
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            m = mid()
            collar = m + 10 if side is Side.BUY else m - 10
            op = ("market", (new_id(), rng.choice(accounts), side, rng.randint(1, 200), collar))
        ops.append(op)
        apply(op)
    info: dict[str, Any] = {
        "start_resting": start_resting,
        "start_levels": start_levels,
        "end_resting": len(book),
        "end_levels": len(book.depth(10**9).bids) + len(book.depth(10**9).asks),
        "end_next_seq": book.next_seq,
        "resting_min": min(sizes, default=len(book)),
        "resting_mean": round(sum(sizes) / len(sizes)) if sizes else len(book),
        "resting_max": max(sizes, default=len(book)),
        **stats,
    }
    return setup, ops, info


Call = tuple[Callable[..., Any], tuple[Any, ...]]


def bind(book: OrderBook, ops: list[Op]) -> list[Call]:
    methods = {"limit": book.submit_limit, "market": book.submit_market, "cancel": book.cancel}
    return [(methods[kind], args) for kind, args in ops]


def prepare(setup: list[Op], ops: list[Op], gc_mode: str) -> tuple[OrderBook, list[Call]]:
    """A fresh book at the starting state, and the calls bound to it.

    The million pre-built calls are bench scaffolding the engine would not hold: they
    are frozen out of the collector (left tracked, every full collection would walk
    them). The book and all it allocates from here on stay under the normal collector
    with default thresholds, unless `gc_mode` is "off".
    """
    book = OrderBook()
    for fn, args in bind(book, setup):
        fn(*args)
    calls = bind(book, ops)
    gc.collect()
    gc.freeze()
    if gc_mode == "off":
        gc.disable()
    return book, calls


def release_gc() -> None:
    gc.enable()
    gc.unfreeze()


def run_untimed(setup: list[Op], ops: list[Op], gc_mode: str) -> tuple[float, float, OrderBook]:
    """Throughput with nothing but the loop around the calls: (wall ops/s, cpu ops/s)."""
    book, calls = prepare(setup, ops, gc_mode)
    cpu0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    for fn, args in calls:
        fn(*args)
    wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - cpu0
    release_gc()
    return len(calls) / wall * 1e9, len(calls) / cpu * 1e9, book


def run_timed(setup: list[Op], ops: list[Op], gc_mode: str) -> tuple[float, list[int], OrderBook]:
    """perf_counter_ns around every call: (wall ops/s, latencies in ns)."""
    book, calls = prepare(setup, ops, gc_mode)
    latencies = [0] * len(calls)
    clock = time.perf_counter_ns
    t0 = clock()
    i = 0
    for fn, args in calls:
        start = clock()
        fn(*args)
        latencies[i] = clock() - start
        i += 1
    elapsed = clock() - t0
    release_gc()
    return len(calls) / elapsed * 1e9, latencies, book


def check_replay(book: OrderBook, info: dict[str, Any]) -> None:
    """The replay must end where generation ended, or the numbers are for other work."""
    if len(book) != info["end_resting"] or book.next_seq != info["end_next_seq"]:
        raise SystemExit("replay diverged from generation: the book is not deterministic")


def clock_overhead_ns() -> int:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(100_000):
        start = clock()
        samples.append(clock() - start)
    samples.sort()
    return samples[len(samples) // 2]


def percentile_us(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000


def summary_us(latencies: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_us": percentile_us(ordered, 0.50),
        "p99_us": percentile_us(ordered, 0.99),
        "p999_us": percentile_us(ordered, 0.999),
        "max_us": ordered[-1] / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--ops", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--repeat", type=int, default=3, help="untimed runs (median reported)")
    parser.add_argument("--int-ids", action="store_true", help="int ids instead of uuid.UUID")
    parser.add_argument("--gc", choices=("on", "off"), default="on", help="collector while timing")
    parser.add_argument("--json-out", help="also write the JSON result to this path")
    args = parser.parse_args()

    t0 = time.perf_counter()
    setup, ops, info = generate(args.ops, args.seed, args.int_ids)
    print(f"generated {len(setup)} setup + {len(ops)} ops in {time.perf_counter() - t0:.1f}s")
    print(
        f"book: {info['start_resting']} resting over {info['start_levels']} levels at start, "
        f"{info['end_resting']} over {info['end_levels']} at end; during the run "
        f"min {info['resting_min']} mean {info['resting_mean']} max {info['resting_max']}"
    )
    print(
        "mix: {limit} limit ({limit_crossing} crossing), {cancel} cancel, {market} market, "
        "{fills} fills".format(**info)
    )

    walls, cpus = [], []
    for _ in range(max(1, args.repeat)):
        wall, cpu, book = run_untimed(setup, ops, args.gc)
        check_replay(book, info)
        walls.append(wall)
        cpus.append(cpu)
        print(f"untimed run: {wall:,.0f} ops/s (wall), {cpu:,.0f} ops/s (thread cpu time)")

    timed_ops_per_s, latencies, book = run_timed(setup, ops, args.gc)
    check_replay(book, info)
    by_kind: dict[str, list[int]] = {}
    for (kind, _), latency in zip(ops, latencies, strict=True):
        by_kind.setdefault(kind, []).append(latency)
    overall = summary_us(latencies)
    result = {
        "bench": "book",
        "ops": len(ops),
        "ids": "int" if args.int_ids else "uuid",
        "gc": args.gc,
        "python": platform.python_version(),
        "ops_per_s": round(statistics.median(walls)),
        "ops_per_s_runs": [round(t) for t in walls],
        "ops_per_cpu_s": round(statistics.median(cpus)),
        "timed_ops_per_s": round(timed_ops_per_s),
        **overall,
        "by_kind": {kind: summary_us(values) for kind, values in sorted(by_kind.items())},
        "clock_overhead_ns": clock_overhead_ns(),
        **info,
    }
    print(
        f"timed run: {timed_ops_per_s:,.0f} ops/s; per op p50 {overall['p50_us']:.2f} us, "
        f"p99 {overall['p99_us']:.2f} us, p99.9 {overall['p999_us']:.2f} us, "
        f"max {overall['max_us']:.1f} us (includes ~{result['clock_overhead_ns']} ns of clock)"
    )
    for kind, values in result["by_kind"].items():
        print(
            f"  {kind:7s} p50 {values['p50_us']:.2f} us, p99 {values['p99_us']:.2f} us, "
            f"p99.9 {values['p999_us']:.2f} us, max {values['max_us']:.1f} us"
        )
    print(
        f"median untimed throughput: {result['ops_per_s']:,} ops/s "
        f"(target >= 500,000; p99 target <= 20 us)"
    )
    line = json.dumps(result)
    print(line)
    if args.json_out:
        with open(args.json_out, "w") as out:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
