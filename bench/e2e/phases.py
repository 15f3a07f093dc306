"""Pieces of `bench/run_all.py`: one measured phase, the generator's ceiling, the bare
intake bound in its own process, the engine drain, a py-spy profile, phase summaries."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.e2e import profile
from bench.e2e.baseline import EmptyServer
from bench.e2e.cpu import CpuSampler
from bench.e2e.load import LoadGenerator, Phase, PhaseResult, Trader
from bench.e2e.mix import OrderMix
from bench.e2e.stack import REPO_ROOT, DevStack
from bench.e2e.stats import percentiles
from bench.e2e.stream import LatencyTracker

PROFILES = REPO_ROOT / ".devdata" / "bench-profiles"  # raw py-spy stacks (large, not kept)


def log(message: str) -> None:
    print(f"bench | {message}", flush=True)


def phase_summary(
    result: PhaseResult,
    tracker: LatencyTracker,
    cpu: dict[str, float],
    clients: int,
) -> dict[str, Any]:
    rec = result.recorder
    seconds = result.measured_seconds
    error_codes: dict[str, int] = {}
    for (kind, status, code), count in rec.outcomes.most_common():
        error_codes[f"{kind}:{status}:{code}"] = count
    crossed = (
        tracker.limit_orders_crossed / tracker.limit_orders_acked
        if (tracker.limit_orders_acked)
        else None
    )
    return {
        "name": result.phase.name,
        "mode": result.phase.mode,
        "rate": result.phase.rate,
        "clients": clients,
        "seconds": seconds,
        "accepted": rec.accepted,
        "accepted_per_second": round(rec.accepted / seconds, 1),
        "requests_per_second": round(rec.requests / seconds, 1),
        "per_second": result.per_second,
        "ack_ms": percentiles(rec.accepted_latencies),
        "latency_by_kind_ms": {k: percentiles(v) for k, v in sorted(rec.latencies.items())},
        "intake_to_fill_ms": percentiles(tracker.fill_from_ack),
        "send_to_fill_ms": percentiles(tracker.fill_from_send),
        "intake_to_first_report_ms": percentiles(tracker.first_report),
        "reports_before_ack": tracker.reports_before_ack,
        "limit_orders_crossing_share": round(crossed, 3) if crossed is not None else None,
        "answers": rec.errors(),
        "error_codes": error_codes,
        "outcomes": rec.outcome_table(),
        "unsent_backlog": result.unsent_backlog,
        "stragglers": result.stragglers,
        "cpu": {k: v for k, v in cpu.items() if not k.startswith("db:")},
        # CPU cost of one request (all kinds) in each process, in milliseconds
        "cpu_ms_per_request": {
            name: round(10.0 * value / max(rec.requests / seconds, 1e-9), 2)
            for name, value in cpu.items()
            if name in ("api", "matching", "worker", "postgres", "redis", "generator")
        },
        "database": {
            "sessions_opened": cpu.get("db:sessions"),
            "commits_per_request": round(cpu["db:xact_commit"] / rec.requests, 2)
            if rec.requests and "db:xact_commit" in cpu
            else None,
        },
    }


Counters = Callable[[], Awaitable[dict[str, float]]]


async def run_phase(
    generator: LoadGenerator,
    phase: Phase,
    sampler_groups: dict[str, Any],
    counters: Counters | None = None,
) -> tuple[PhaseResult, dict[str, float], dict[str, list[float]]]:
    """Run `phase`; CPU is sampled (and `counters` read) over its measured part only:
    from the end of the warm-up to the end of the phase, not while the last answers
    come in (an open loop's idle workers are then already gone, a closed loop's finish
    their request).

    The returned CPU dict also holds the deltas of `counters` prefixed `db:`.
    """
    sampler = CpuSampler(sampler_groups, alone=frozenset({"generator"}))

    async def measure() -> dict[str, float]:
        await asyncio.sleep(phase.warmup)
        sampler.start()
        before = await counters() if counters is not None else {}
        await asyncio.sleep(phase.duration)
        cpu = sampler.stop()
        if counters is not None:
            after = await counters()
            cpu.update({f"db:{k}": after[k] - before.get(k, 0.0) for k in after})
        return cpu

    measuring = asyncio.create_task(measure())
    try:
        result = await generator.run(phase)
        cpu = await measuring
    finally:
        measuring.cancel()
    tracker = generator.tracker
    samples = {
        "ack": list(result.recorder.accepted_latencies),
        "fill": list(tracker.fill_from_ack),
    }
    return result, cpu, samples


async def empty_handler_baseline(clients: int, seconds: float) -> dict[str, Any]:
    """The generator's own ceiling: same traders, mix and client against a canned 201."""
    with EmptyServer() as server:
        traders = [Trader(i, "baseline", [server.port], random.Random(i)) for i in range(clients)]
        generator = LoadGenerator(traders, OrderMix(), LatencyTracker(), progress=False)
        me = os.getpid()
        sampler = CpuSampler(
            {"generator": lambda: [me], "empty handler": lambda: [server.process.pid]},  # type: ignore[union-attr]
            alone=frozenset({"generator"}),
        )
        sampler.start()
        result = await generator.run(Phase("baseline", "closed", seconds, warmup=1.0))
        cpu = sampler.stop()
        for trader in traders:
            trader.close()
    requests = result.recorder.requests
    per_second = requests / seconds
    gen_cpu = cpu["generator"]
    return {
        "requests_per_second": round(per_second, 0),
        "generator_cpu_percent": gen_cpu,
        "empty_handler_cpu_percent": cpu["empty handler"],
        "generator_us_per_request": (
            round(gen_cpu / 100 * 1e6 / per_second, 1) if requests else None
        ),
        "latency_ms": percentiles(result.recorder.latencies.get("limit", [])),
    }


def run_bare(
    stack: DevStack, clients: int, seconds: float, warmup: float, out: Path
) -> dict[str, Any]:
    """`bench/bare_intake.py` in its own process on the running system; its JSON + CPU."""
    command = [
        sys.executable, str(REPO_ROOT / "bench" / "bare_intake.py"),
        "--database-url", stack.database_url, "--redis-url", stack.redis_url,
        "--concurrency", str(clients), "--duration", str(seconds), "--warmup", str(warmup),
        "--json-out", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    groups = {
        "bare": lambda: [process.pid],
        "postgres": lambda: stack.pid_of("postgres"),
        "redis": lambda: stack.pid_of("redis"),
        "matching": lambda: stack.pid_of("matching"),
    }
    time.sleep(min(warmup, 5.0) + 3.0)  # accounts + warm-up: sample the measured part
    sampler = CpuSampler(groups)
    sampler.start()
    code = process.wait(timeout=seconds + warmup + 300)
    cpu = sampler.stop()
    if code != 0:
        raise RuntimeError(f"bare_intake.py exited {code}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["cpu"] = cpu
    return result


async def wait_drained(engine: Any, within: float = 60.0) -> int:
    """Wait until no order is pending_new (the engine caught up); how many are left."""
    from sqlalchemy import text

    deadline = time.monotonic() + within
    while True:
        async with engine.connect() as conn:
            left = (
                await conn.execute(
                    text("SELECT count(*) FROM client_order WHERE status = 'pending_new'")
                )
            ).scalar_one()
        if left == 0 or time.monotonic() > deadline:
            return int(left)
        await asyncio.sleep(0.5)


async def profile_later(stack: DevStack, phase: Phase, summary: dict[str, Any]) -> None:
    """py-spy on the api and matching for the measured part of a phase."""
    if not profile.available():
        log("py-spy is not installed (uv pip install py-spy): no profile")
        return
    await asyncio.sleep(phase.warmup)
    targets = {
        name: stack.pid_of(name)[0] for name in ("api", "matching", "worker") if stack.pid_of(name)
    }
    profiler = profile.Profiler(PROFILES, targets, min(phase.duration, 30.0))
    try:
        profiler.start()
    except OSError as exc:  # a profile is a bonus: never fail the bench for it
        log(f"py-spy could not start: {exc}")
        return
    await asyncio.to_thread(profiler.wait)
    summary.setdefault("profiles", {})[phase.name] = profiler.summary()
    log(f"profile ({phase.name}): {json.dumps(summary['profiles'][phase.name])[:2000]}")


def phase_label(phase: Phase) -> str:
    if phase.mode == "closed":
        return "closed loop"
    return f"open loop {phase.rate:.0f}/s"


def phase_line(item: dict[str, Any]) -> str:
    ack, fill = item["ack_ms"], item["intake_to_fill_ms"]
    return (
        f"{item['name']}: {item['accepted_per_second']:.0f} accepted orders/s,"
        f" {item['requests_per_second']:.0f} req/s; ACK p50 {ack['p50']} p95 {ack['p95']}"
        f" p99 {ack['p99']} max {ack['max']} ms; intake→fill p50 {fill['p50']} p99"
        f" {fill['p99']} ms; answers {item['answers']}; cpu {item['cpu']}"
    )
