"""Process-level metrics every service exports: memory and DB pool connections."""

from __future__ import annotations

from collections.abc import Iterable

import psutil
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine


class ProcessMemoryCollector(Collector):
    """`brokerx_process_memory_bytes{kind=rss|vms}` read from /proc at scrape time."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._process = psutil.Process()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        info = self._process.memory_info()
        family = GaugeMetricFamily(
            "brokerx_process_memory_bytes", "Process memory", labels=["service", "kind"]
        )
        family.add_metric([self._service, "rss"], info.rss)
        family.add_metric([self._service, "vms"], info.vms)
        yield family


class DatabasePoolCollector(Collector):
    """`brokerx_db_pool_connections{state=checked_out|idle|size}` of one engine."""

    def __init__(self, service: str, engine: AsyncEngine) -> None:
        self._service = service
        self._engine = engine

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pool = self._engine.sync_engine.pool
        family = GaugeMetricFamily(
            "brokerx_db_pool_connections",
            "Database pool connections",
            labels=["service", "state"],
        )
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        idle = getattr(pool, "checkedin", lambda: 0)()
        family.add_metric([self._service, "checked_out"], checked_out)
        family.add_metric([self._service, "idle"], idle)
        family.add_metric([self._service, "size"], getattr(pool, "size", lambda: 0)())
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
