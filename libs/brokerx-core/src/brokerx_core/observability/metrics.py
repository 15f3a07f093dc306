"""Process-level metrics every service exports: memory and DB pool connections.

A single process computes them at scrape time (`register_process_metrics`). In
Prometheus multiprocess mode (the api with API_WORKERS > 1) a scrape only runs in one
worker and cannot see the others' memory or pools, so `ProcessMetrics` has every worker
publish its own numbers into `livesum` gauges instead: `/metrics` reports the api's
total (the same names and labels as in single-process mode, summed over live workers).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import psutil
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.observability.multiprocess import multiprocess_dir

MEMORY_HELP = "Process memory"
POOL_HELP = "Database pool connections"
# How stale another worker's memory/pool numbers may be in multiprocess mode (the
# scraping worker publishes its own right before answering).
PUBLISH_INTERVAL_SECONDS = 5.0


def memory_values(process: psutil.Process) -> dict[str, int]:
    """`kind` -> bytes (rss, vms) of `process`."""
    info = process.memory_info()
    return {"rss": info.rss, "vms": info.vms}


def pool_values(engine: AsyncEngine) -> dict[str, int]:
    """`state` -> connections (checked_out, idle, size) of the engine's pool."""
    pool = engine.sync_engine.pool
    return {
        "checked_out": getattr(pool, "checkedout", lambda: 0)(),
        "idle": getattr(pool, "checkedin", lambda: 0)(),
        "size": getattr(pool, "size", lambda: 0)(),
    }


class ProcessMemoryCollector(Collector):
    """`brokerx_process_memory_bytes{kind=rss|vms}` read from /proc at scrape time."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._process = psutil.Process()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "brokerx_process_memory_bytes", MEMORY_HELP, labels=["service", "kind"]
        )
        for kind, value in memory_values(self._process).items():
            family.add_metric([self._service, kind], value)
        yield family


class DatabasePoolCollector(Collector):
    """`brokerx_db_pool_connections{state=checked_out|idle|size}` of one engine."""

    def __init__(self, service: str, engine: AsyncEngine) -> None:
        self._service = service
        self._engine = engine

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "brokerx_db_pool_connections", POOL_HELP, labels=["service", "state"]
        )
        for state, value in pool_values(self._engine).items():
            family.add_metric([self._service, state], value)
        yield family


def register_process_metrics(
    service: str, engine: AsyncEngine | None = None, registry: CollectorRegistry = REGISTRY
) -> list[Collector]:
    """Register memory and pool collectors; returns them so callers can unregister."""
    collectors: list[Collector] = [ProcessMemoryCollector(service)]
    if engine is not None:
        collectors.append(DatabasePoolCollector(service, engine))
    for collector in collectors:
        registry.register(collector)
    return collectors


def unregister(collectors: list[Collector], registry: CollectorRegistry = REGISTRY) -> None:
    """Undo `register_process_metrics` (an app factory may run more than once in tests)."""
    for collector in collectors:
        try:
            registry.unregister(collector)
        except KeyError:
            pass


# Multiprocess mode only; not registered anywhere (a scrape reads their files).
_MEMORY = Gauge(
    "brokerx_process_memory_bytes",
    MEMORY_HELP,
    ["service", "kind"],
    multiprocess_mode="livesum",
    registry=None,
)
_POOL = Gauge(
    "brokerx_db_pool_connections",
    POOL_HELP,
    ["service", "state"],
    multiprocess_mode="livesum",
    registry=None,
)


class ProcessMetrics:
    """Memory and pool metrics of this process, in whichever mode prometheus_client runs.

    Single process: the scrape-time collectors above, on `registry`. Multiprocess:
    a task writes this process's values every `interval` seconds; `refresh()` writes
    them at once (the scraping worker calls it before answering).
    """

    def __init__(
        self,
        service: str,
        engine: AsyncEngine | None = None,
        registry: CollectorRegistry = REGISTRY,
        *,
        interval: float = PUBLISH_INTERVAL_SECONDS,
    ) -> None:
        self._service = service
        self._engine = engine
        self._registry = registry
        self._interval = interval
        self._process = psutil.Process()
        self._collectors: list[Collector] = []
        self._task: asyncio.Task[None] | None = None
        self.multiprocess = multiprocess_dir() is not None

    def start(self) -> None:
        """Register the collectors, or start publishing (call from the event loop)."""
        if not self.multiprocess:
            self._collectors = register_process_metrics(self._service, self._engine, self._registry)
            return
        self.refresh()
        self._task = asyncio.create_task(self._publish_forever(), name="process-metrics")

    def refresh(self) -> None:
        """Multiprocess mode: publish this process's current values now."""
        if not self.multiprocess:
            return
        for kind, value in memory_values(self._process).items():
            _MEMORY.labels(service=self._service, kind=kind).set(value)
        if self._engine is not None:
            for state, value in pool_values(self._engine).items():
                _POOL.labels(service=self._service, state=state).set(value)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        unregister(self._collectors, self._registry)
        self._collectors = []

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                self.refresh()
            except (OSError, psutil.Error):  # /proc unreadable for a moment: try again
                continue
