"""The load generator's phases end with their measured window: an open loop's idle
workers stop when the phase ends (they used to wait on the queue until cancelled after
the request timeout, and that idle tail was charged to the CPU measurement), and the CPU
of a phase is sampled over the measured window only."""

from __future__ import annotations

import random

import uvloop

from bench.e2e.baseline import EmptyServer
from bench.e2e.load import LoadGenerator, Phase, Trader
from bench.e2e.mix import OrderMix
from bench.e2e.phases import run_phase
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
