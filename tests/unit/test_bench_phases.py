"""The load generator's phases end with their measured window: an open loop's idle
workers stop when the phase ends (they used to wait on the queue until cancelled after
the request timeout, and that idle tail was charged to the CPU measurement), and the CPU
of a phase is sampled over the measured window only."""

from __future__ import annotations

import asyncio
import random
import time

import uvloop

from bench.e2e.baseline import EmptyServer
from bench.e2e.load import LoadGenerator, Phase, Trader
from bench.e2e.mix import OrderMix
from bench.e2e.phases import run_phase
from bench.e2e.stats import Recorder
from bench.e2e.stream import LatencyTracker


def _run_open_phase(timeout: float) -> tuple[int, int, dict[str, float]]:
    async def main() -> tuple[int, int, dict[str, float]]:
        with EmptyServer() as server:
            port = server.port
            handler = server.process.pid  # type: ignore[union-attr]
            traders = [Trader(i, "phase", [port], random.Random(i)) for i in range(20)]
            generator = LoadGenerator(traders, OrderMix(), LatencyTracker(), progress=False)
            phase = Phase("open", "open", 1.0, warmup=0.2, rate=200, timeout=timeout)
            result, cpu, _ = await run_phase(generator, phase, {"handler": lambda: [handler]}, None)
            for trader in traders:
                trader.close()
        return result.stragglers, result.recorder.requests, cpu

    return uvloop.run(main())


def test_open_loop_workers_stop_with_the_phase() -> None:
    # A request timeout far beyond the phase: waiting for it would show as stragglers.
    stragglers, requests, cpu = _run_open_phase(timeout=30.0)
    assert stragglers == 0
    assert requests > 0
    assert "handler" in cpu
    assert "machine" in cpu


def _end_with_released(released: int, idle: int) -> tuple[int, int]:
    """`idle` open-loop clients wait on the schedule; `released` requests come due in the
    loop iteration the phase ends in. Returns (backlog reported, requests sent)."""

    async def main() -> tuple[int, int]:
        with EmptyServer() as server:
            traders = [Trader(i, "phase", [server.port], random.Random(i)) for i in range(idle)]
            generator = LoadGenerator(traders, OrderMix(), LatencyTracker(), progress=False)
            rec = Recorder(measuring=True)
            backlog: asyncio.Queue[float | None] = asyncio.Queue()
            stop = asyncio.Event()
            workers = [
                asyncio.ensure_future(generator._open_worker(t, rec, backlog, stop))
                for t in traders
            ]
            await asyncio.sleep(0)  # every client reaches the queue: all idle
            now = time.perf_counter()
            for _ in range(released):
                backlog.put_nowait(now)
            stop.set()
            unsent = await generator._end_open_loop(backlog, rec)
            await asyncio.wait_for(asyncio.gather(*workers), 10)
            for trader in traders:
                trader.close()
        return unsent, rec.requests

    return uvloop.run(main())


def test_requests_released_as_the_phase_ends_go_to_idle_clients_not_the_backlog() -> None:
    # The sweep's "no backlog" rule picks the rate peers are compared on: requests due
    # in the last scheduler tick, with clients free to send them, are no backlog.
    assert _end_with_released(released=5, idle=20) == (0, 5)


def test_requests_with_no_free_client_are_the_backlog() -> None:
    unsent, sent = _end_with_released(released=25, idle=20)
    assert (unsent, sent) == (5, 20)
