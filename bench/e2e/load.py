"""Closed- and open-loop traffic from many clients over keep-alive HTTP/1.1.

* closed loop: every client sends its next request as soon as the previous answer came;
* open loop: requests are scheduled at a fixed rate whatever the answers, handed to the
  first idle client, and their latency runs from the *scheduled* time, so a slow system
  is charged for the requests it made wait (no coordinated omission). Requests still
  unsent when the phase ends are reported as a backlog.

With several api ports (chaos: two api processes), a client sends round-robin and, when
one api does not answer (refused, reset, timeout), retries the same request once on the
next one: every new order carries a `client_order_id`, so a retry cannot duplicate it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from tqdm import tqdm

from bench.e2e.http import HttpConnection, Response, TransportError
from bench.e2e.mix import ClientOrders, OrderMix, Planned
from bench.e2e.stats import Recorder
from bench.e2e.stream import LatencyTracker

SCHEDULER_TICK = 0.002  # seconds between two releases of due open-loop requests


@dataclass
class Trader:
    """One simulated client: its token, connections (one per api) and open orders."""

    index: int
    token: str
    ports: list[int]
    rng: random.Random
    orders: ClientOrders = field(default_factory=ClientOrders)
    connections: list[HttpConnection] = field(default_factory=list)
    turn: int = 0
    timeout: float = 10.0  # per request, set by each phase
    auth: dict[str, str] = field(default_factory=dict)
    # client_order_id -> order id of every order the api accepted (chaos: loss check)
    accepted: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def connection(self, offset: int = 0) -> HttpConnection:
        if not self.connections:
            self.connections = [HttpConnection(port, timeout=self.timeout) for port in self.ports]
        return self.connections[(self.turn + offset) % len(self.connections)]

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


@dataclass(frozen=True)
class Phase:
    name: str
    mode: str  # "closed" | "open"
    duration: float
    warmup: float = 5.0
    rate: float = 0.0  # open loop: requests per second
    timeout: float = 10.0


@dataclass
class PhaseResult:
    phase: Phase
    measured_seconds: float
    recorder: Recorder
    unsent_backlog: int = 0
    failovers: int = 0
    per_second: list[int] = field(default_factory=list)
    # Load workers still running `phase.timeout + 5` s after the end (then cancelled).
    stragglers: int = 0


class LoadGenerator:
    def __init__(
        self,
        traders: list[Trader],
        mix: OrderMix,
        tracker: LatencyTracker,
        *,
        timeline: bool = False,
        progress: bool = True,
    ) -> None:
        self.traders = traders
        self.mix = mix
        self.tracker = tracker
        self.timeline = timeline
        self.progress = progress
        self.failovers = 0
        self.finish = asyncio.Event()  # ends the running phase early (chaos)
        self.hooks: list[Callable[[float], None]] = []  # called every second (chaos)

    async def send(self, trader: Trader, planned: Planned, started: float, rec: Recorder) -> None:
        """Send one request (failing over once), record it, update the trader's orders."""
        headers = dict(trader.auth)
        if planned.headers:
            headers.update(planned.headers)
        trader.turn += 1
        response: Response | None = None
        error: TransportError | None = None
        port = 0
        for offset in range(min(2, len(trader.ports))):
            connection = trader.connection(offset)
            port = connection.port
            try:
                response = await connection.request(
                    planned.method, planned.path, headers=headers, json=planned.body
                )
                error = None
                break
            except TransportError as exc:
                error = exc
                if offset == 0 and len(trader.ports) > 1:
                    self.failovers += 1
        done = time.perf_counter()
        if response is None:
            assert error is not None
            rec.record(
                planned.kind, 0, f"transport:{error.kind}", done - started, time.time(), port
            )
            if planned.order_id:
                self._release(trader, planned.order_id)
            return
        status = response.status
        code = response.code() if status >= 300 else None
        rec.record(planned.kind, status, code, done - started, time.time(), port)
        self._update(trader, planned, response, started, done)

    def _update(
        self, trader: Trader, planned: Planned, response: Response, started: float, done: float
    ) -> None:
        status = response.status
        if planned.method == "POST":
            if status in (200, 201):
                order = orjson.loads(response.body)
                self.tracker.acked(
                    order["id"], started, done, limit=planned.kind == "limit" and status == 201
                )
                trader.orders.added(order)
                if trader.accepted is not None and planned.body is not None:
                    trader.accepted[str(planned.body.get("client_order_id"))] = order["id"]
            return
        assert planned.order_id is not None
        if planned.method == "DELETE" or status >= 300:
            # Cancel requested, or the order is no longer there to amend: stop tracking it.
            trader.orders.forget(planned.order_id)
        # A 202 replace stays `amending` until its `replaced`/`replace_rejected` report.

    def _release(self, trader: Trader, order_id: str) -> None:
        order = trader.orders.open.get(order_id)
        if order is not None:
            order.amending = False

    # --- phases ---------------------------------------------------------------------

    async def run(self, phase: Phase) -> PhaseResult:
        rec = Recorder(timeline=[] if self.timeline else None)
        self.tracker.measuring = False
        self.tracker.reset()
        failovers_before = self.failovers
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + phase.warmup
        end = measure_from + phase.duration
        stop = asyncio.Event()
        result = PhaseResult(phase, phase.duration, rec)
        for trader in self.traders:
            trader.timeout = phase.timeout
            for connection in trader.connections:
                connection.timeout = phase.timeout
        if phase.mode == "closed":
            workers = [self._closed(trader, rec, stop) for trader in self.traders]
            backlog: asyncio.Queue[float | None] | None = None
        else:
            backlog = asyncio.Queue()
            workers = [self._open_worker(trader, rec, backlog, stop) for trader in self.traders]
            workers.append(self._schedule(phase.rate, start, end, backlog, stop))
        tasks = [asyncio.ensure_future(worker) for worker in workers]
        await self._clock(phase, rec, start, measure_from, end, result)
        result.measured_seconds = max(1e-3, min(phase.duration, loop.time() - measure_from))
        stop.set()
        if backlog is not None:
            result.unsent_backlog = await self._end_open_loop(backlog, rec)
        self.tracker.measuring = False
        rec.measuring = False
        done, pending = await asyncio.wait(tasks, timeout=phase.timeout + 5)
        result.stragglers = len(pending)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                raise RuntimeError("a load worker failed") from task.exception()
        result.failovers = self.failovers - failovers_before
        return result

    async def _end_open_loop(self, backlog: asyncio.Queue[float | None], rec: Recorder) -> int:
        """End an open loop's schedule; return its backlog: the requests no client was
        free to send.

        The scheduler's last tick may release requests in the loop iteration the phase
        ends in: the idle clients it woke for them have not run yet. They run first (one
        yield), so a request that had a free client is sent, not counted as a backlog.
        What is still queued then waited for a client: it counts as unsent, with the
        time it waited until now, not as absent.
        """
        await asyncio.sleep(0)
        unsent = backlog.qsize()
        now = time.perf_counter()
        while not backlog.empty():
            scheduled = backlog.get_nowait()
            if scheduled is not None:
                rec.accepted_latencies.append(now - scheduled)
        # Wake the idle open-loop workers: they wait on the queue, not on `stop`.
        for _ in self.traders:
            backlog.put_nowait(None)
        return unsent

    async def _clock(
        self,
        phase: Phase,
        rec: Recorder,
        start: float,
        measure_from: float,
        end: float,
        result: PhaseResult,
    ) -> None:
        loop = asyncio.get_running_loop()
        bar = tqdm(
            total=int(phase.warmup + phase.duration),
            desc=f"{phase.name:>14}",
            unit="s",
            disable=not self.progress,
            leave=True,
        )
        last_accepted = 0
        tick = start
        try:
            while tick < end and not self.finish.is_set():
                tick += 1.0
                await asyncio.sleep(max(0.0, tick - loop.time()))
                if not rec.measuring and loop.time() >= measure_from:
                    rec.measuring = True
                    self.tracker.measuring = True
                for hook in self.hooks:
                    hook(time.time())
                if rec.measuring:
                    result.per_second.append(rec.accepted - last_accepted)
                    last_accepted = rec.accepted
                bar.update(1)
                bar.set_postfix(
                    accepted=rec.accepted, last_s=result.per_second[-1] if result.per_second else 0
                )
        finally:
            bar.close()

    async def _closed(self, trader: Trader, rec: Recorder, stop: asyncio.Event) -> None:
        while not stop.is_set():
            planned = self.mix.next(trader.orders, trader.rng)
            await self.send(trader, planned, time.perf_counter(), rec)

    async def _open_worker(
        self,
        trader: Trader,
        rec: Recorder,
        backlog: asyncio.Queue[float | None],
        stop: asyncio.Event,
    ) -> None:
        while not stop.is_set():
            # None: the phase is over. Requests still queued then were taken out and
            # counted as unsent before the None went in (`run`).
            scheduled = await backlog.get()
            if scheduled is None:
                return
            planned = self.mix.next(trader.orders, trader.rng)
            await self.send(trader, planned, scheduled, rec)

    async def _schedule(
        self,
        rate: float,
        start: float,
        end: float,
        backlog: asyncio.Queue[float | None],
        stop: asyncio.Event,
    ) -> None:
        """Put each request's scheduled perf_counter time in the queue when it is due.

        Wakes every SCHEDULER_TICK and releases everything due by then: uvloop's timers
        have millisecond resolution, and sleeping "until the next request" at 1,000/s
        spins. A request may so leave up to one tick late; its latency still counts from
        its scheduled time (pessimistic by at most the tick).
        """
        loop = asyncio.get_running_loop()
        offset = time.perf_counter() - loop.time()  # loop clock -> perf_counter
        interval = 1.0 / rate
        due = start
        while not stop.is_set() and due < end:
            now = loop.time()
            while due <= now and due < end:
                backlog.put_nowait(due + offset)
                due += interval
            await asyncio.sleep(SCHEDULER_TICK)
