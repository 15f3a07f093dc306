"""Execution reports over the live stream, timestamped on receipt.

Each client opens its own WebSocket (`/api/v1/stream`, `orders: true`): the api sends a
client only its own reports. Every report updates the client's view of its open orders
and feeds the intake→report latencies:

* `first report`: 201 received → first report of that order received (the engine took it);
* `fill`: 201 received → first fill report, for orders filled in the batch that accepted
  them (their `new` and first fill carry the same engine batch `ts`): the latency a trader
  sees between the acknowledgement and the execution of a marketable order.

A report can be read before the 201 of its own order (the engine is fast and the two
travel on different sockets): such latencies count as 0 and are counted apart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from bench.e2e.mix import ClientOrders
from bench.e2e.wsclient import connect

FILL_EVENTS = frozenset({"partial_fill", "fill"})


@dataclass(slots=True)
class OrderTimes:
    sent: float = 0.0  # scheduled/sent time of the POST (perf_counter)
    acked: float = 0.0  # 201 read
    first_report: float = 0.0
    new_ts: str | None = None  # engine batch ts of the `new` report
    fill_done: bool = False


@dataclass
class LatencyTracker:
    """Joins 201 receipts with report receipts; collects latencies while `measuring`."""

    measuring: bool = False
    first_report: list[float] = field(default_factory=list)
    fill_from_ack: list[float] = field(default_factory=list)
    fill_from_send: list[float] = field(default_factory=list)
    reports_before_ack: int = 0
    reports: int = 0
    fills_on_arrival: int = 0
    limit_orders_acked: int = 0
    limit_orders_crossed: int = 0
    _orders: dict[str, OrderTimes] = field(default_factory=dict)
    _early: dict[str, list[tuple[float, dict[str, object]]]] = field(default_factory=dict)
    _crossable: set[str] = field(default_factory=set)

    def acked(self, order_id: str, sent: float, acked: float, *, limit: bool) -> None:
        times = OrderTimes(sent=sent, acked=acked)
        self._orders[order_id] = times
        if limit and self.measuring:
            self.limit_orders_acked += 1
            self._crossable.add(order_id)
        for received, report in self._early.pop(order_id, ()):
            self._apply(order_id, times, received, report)

    def report(self, received: float, report: dict[str, object]) -> None:
        self.reports += 1
        order_id = str(report.get("order_id"))
        times = self._orders.get(order_id)
        if times is None:
            # Read before its 201 (or an order of an earlier phase): keep it a while.
            if len(self._early) < 100_000:
                self._early.setdefault(order_id, []).append((received, report))
            return
        self._apply(order_id, times, received, report)

    def _apply(
        self, order_id: str, times: OrderTimes, received: float, report: dict[str, object]
    ) -> None:
        event = report.get("event")
        if received < times.acked:
            self.reports_before_ack += 1
        if not times.first_report:
            times.first_report = received
            if self.measuring:
                self.first_report.append(max(0.0, received - times.acked))
        if event == "new":
            times.new_ts = str(report.get("ts"))
        elif event in FILL_EVENTS and not times.fill_done:
            times.fill_done = True
            if times.new_ts is None or times.new_ts == str(report.get("ts")):
                if self.measuring:
                    self.fills_on_arrival += 1
                    self.fill_from_ack.append(max(0.0, received - times.acked))
                    self.fill_from_send.append(received - times.sent)
                if order_id in self._crossable:
                    self.limit_orders_crossed += 1
        status = report.get("status")
        if status in ("filled", "canceled", "expired", "rejected"):
            self._orders.pop(order_id, None)
            self._crossable.discard(order_id)

    def reset(self) -> None:
        self.first_report.clear()
        self.fill_from_ack.clear()
        self.fill_from_send.clear()
        self.reports_before_ack = self.reports = self.fills_on_arrival = 0
        self.limit_orders_acked = self.limit_orders_crossed = 0
        self._crossable.clear()


@dataclass
class StreamStats:
    connected: int = 0
    reconnects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last_report_wall: float = 0.0  # time.time() of the last report (chaos recovery)
    report_times: list[tuple[float, str]] = field(default_factory=list)  # (wall, engine ts)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def listen(
    ports: Callable[[], list[int]],
    token: str,
    orders: ClientOrders,
    tracker: LatencyTracker,
    stats: StreamStats,
    *,
    keep_report_times: bool = False,
) -> None:
    """Follow the client's reports until cancelled; reconnect (to the next api) on loss.

    Reconnects reuse `token`, and the api ends a connection (4401) when its token expires:
    the stack issues 2-hour tokens (stack.py), longer than any run.
    """
    attempt = 0
    while True:
        candidates = ports()
        port = candidates[attempt % len(candidates)]
        attempt += 1
        try:
            async with connect(f"ws://127.0.0.1:{port}/api/v1/stream", open_timeout=10) as ws:
                await ws.send_text(orjson.dumps({"action": "auth", "token": token}))
                await ws.send_text(orjson.dumps({"action": "subscribe", "orders": True}))
                stats.connected += 1
                try:
                    async for raw in ws:
                        received = time.perf_counter()
                        message = orjson.loads(raw)
                        kind = message.get("type")
                        if kind == "execution_report":
                            orders.reported(message)
                            tracker.report(received, message)
                            wall = time.time()
                            stats.last_report_wall = wall
                            if keep_report_times:
                                stats.report_times.append((wall, str(message.get("ts"))))
                        elif kind == "error":
                            stats.error(f"ws:{message.get('code')}")
                finally:
                    stats.connected -= 1
        except (OSError, TimeoutError) as exc:  # wsclient's errors are OSErrors
            stats.error(type(exc).__name__)
        stats.reconnects += 1
        await asyncio.sleep(0.2)
