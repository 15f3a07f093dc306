"""The matching service as a real process, killed with SIGKILL (and Redis flushed) in
the middle of a stream of orders: nothing is lost, nothing applies twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_worker.jobs.outbox import relay_pass
from tests.e2e.matching_checks import assert_consistent, wait_streams_drained
from tests.support.engine import MatchingProcess, matching_settings, wait_settled
from tests.support.order_flow import OrderFlow, create_traders
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("instruments")]

ORDERS = 5_000
TRADERS = 24


async def chaos(
    flow: OrderFlow,
    sender: asyncio.Task[None],
    at: list[int],
    strike: object,
    seed: int,
) -> int:
    """Call `strike()` once the flow has placed each count in `at` (plus a random delay
    so the blow lands at an arbitrary point of a batch); returns how many struck."""
    rng = random.Random(seed)
    struck = 0
    for threshold in at:
        await eventually(
            lambda: _placed(flow, sender),
            lambda placed, threshold=threshold: placed >= threshold,
            timeout=60,
            message="the order flow stalled",
        )
        if sender.done():
            break
        # A random point inside the engine's work, not a wait for a condition.
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await strike()  # type: ignore[operator]
        struck += 1
    return struck


async def _placed(flow: OrderFlow, sender: asyncio.Task[None]) -> int:
    if sender.done():
        sender.result()
        return 1 << 30
    return len(flow.placed)


async def test_sigkill_at_random_points_loses_no_order(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    started = time.monotonic()
    traders = await create_traders(engine, TRADERS)
    process = MatchingProcess(matching_settings(servers, database_url), "crash").start()
    sender: asyncio.Task[None] | None = None
    try:
        await process.wait_serving(4)
        flow = OrderFlow(traders, seed=11)
        sender = asyncio.create_task(flow.send(engine, redis, ORDERS))

        async def kill_and_restart() -> None:
            process.kill()
            process.start()

        kills = await chaos(flow, sender, [700, 1800, 2900, 4100], kill_and_restart, seed=3)
        await sender
        await process.wait_serving(4)
        await wait_settled(engine, timeout=60)
        await wait_streams_drained(redis)
        counts = await assert_consistent(engine, redis)
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        process.kill()
    assert kills == 4
    assert counts["trades"] > 500
    print(
        f"\n{flow.commands} commands ({len(flow.placed)} orders), {kills} SIGKILLs,"
        f" {counts} in {time.monotonic() - started:.1f}s"
    )


async def relay(sessionmaker: async_sessionmaker[AsyncSession], redis: Redis) -> None:
    """The worker's outbox relay, as its background task runs it (faster cadence)."""
    while True:
        with contextlib.suppress(Exception):  # Redis flushed under it: next pass
            await relay_pass(sessionmaker, redis, republish_after_seconds=1.0, shards=4)
        await asyncio.sleep(0.5)


async def test_redis_flush_and_sigkill_mid_run_lose_no_command(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    """Redis is flushed (FLUSHDB of the test's database: FLUSHALL would wipe the other
    suites sharing the server) three times and the engine killed once. New orders whose
    commands vanished are re-applied from PostgreSQL by recovery; cancels and replaces
    that vanished are republished by the worker's outbox relay."""
    started = time.monotonic()
    traders = await create_traders(engine, TRADERS)
    process = MatchingProcess(matching_settings(servers, database_url), "flush").start()
    relaying = asyncio.create_task(relay(sessionmaker, redis))
    sender: asyncio.Task[None] | None = None
    try:
        await process.wait_serving(4)
        flow = OrderFlow(traders, seed=23)
        sender = asyncio.create_task(flow.send(engine, redis, ORDERS))
        blows = iter(["flush", "flush", "kill", "flush"])

        async def strike() -> None:
            if next(blows) == "flush":
                await redis.flushdb()
            else:
                process.kill()
                process.start()

        struck = await chaos(flow, sender, [900, 2000, 3000, 4200], strike, seed=9)
        await sender
        await process.wait_serving(4)
        await wait_settled(engine, timeout=60)
        await wait_streams_drained(redis)
        counts = await assert_consistent(engine, redis)
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        relaying.cancel()
        process.kill()
    assert struck == 4
    assert counts["trades"] > 500
    print(
        f"\n{flow.commands} commands ({len(flow.placed)} orders), 3 FLUSHDB + 1 SIGKILL,"
        f" {counts} in {time.monotonic() - started:.1f}s"
    )
