"""Shared set-up of the matching benchmarks: a fresh database and Redis, traders, and
the matching service as a real process (the tests' helpers, so the SQL is the one the
contract fixes)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from brokerx_core.migrate import upgrade_async  # noqa: E402
from brokerx_core.seed import seed_instruments  # noqa: E402
from brokerx_core.streams import order_stream  # noqa: E402
from tests.support.engine import MatchingProcess, matching_settings  # noqa: E402
from tests.support.servers import ServerUrls, discover  # noqa: E402


@dataclass
class BenchServers:
    servers: ServerUrls
    database_url: str
    engine: AsyncEngine
    redis: Redis


@asynccontextmanager
async def bench_servers(name: str) -> AsyncIterator[BenchServers]:
    """A freshly migrated database `name` (dropped afterwards) and a flushed Redis db
    (TEST_DATABASE_URL / TEST_REDIS_URL, else the embedded dev servers)."""
    servers = discover(name)
    admin = create_async_engine(servers.admin_database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await upgrade_async(servers.database_url)
    engine = create_async_engine(servers.database_url, pool_size=10)
    redis = Redis.from_url(servers.redis_url)
    await redis.flushdb()
    async with engine.begin() as conn:
        await seed_instruments(conn)
    try:
        yield BenchServers(servers, servers.database_url, engine, redis)
    finally:
        await redis.aclose()
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def matching_process(bench: BenchServers, name: str, **overrides: object) -> MatchingProcess:
    settings = matching_settings(
        bench.servers, bench.database_url, shard_poll_seconds=1.0, block_ms=1000, **overrides
    )
    return MatchingProcess(settings, name)


async def outstanding(redis: Redis, shards: int) -> int:
    """Entries of the order streams not yet acknowledged (undelivered + pending)."""
    total = 0
    for shard in range(shards):
        try:
            groups = await redis.xinfo_groups(order_stream(shard))
        except Exception:  # stream not created yet
            continue
        for group in groups:
            total += int(group.get("lag") or 0) + int(group.get("pending") or 0)
    return total


async def wait_until(probe, predicate, within: float, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll `probe` until `predicate` holds (fails after `within` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if predicate(value):
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"condition not met in {within}s (last {value!r})")
        await asyncio.sleep(interval)


async def scrape(port: int) -> dict[str, float]:
    """`<name>` → value of the un-labelled samples of the service's /metrics."""
    async with httpx.AsyncClient(timeout=5) as client:
        body = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    values: dict[str, float] = {}
    for line in body.splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match and not match.group(2):
            values[match.group(1)] = float(match.group(3))
    return values
