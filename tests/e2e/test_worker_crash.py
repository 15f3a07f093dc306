"""The worker as a real process, SIGKILLed in the middle of relaying a backlog of
committed but unpublished commands: after a restart every command reaches the engine,
and the ones relayed twice apply once.

The backlog is what an api crash (or a Redis outage) leaves behind: orders, cancels and
replaces committed with their outbox rows and never XADDed, while the matching service
runs (so its start-up recovery does not pick them up: only the relay can). Two blows,
each held at its point from outside:

1. killed before its XADD: Redis writes paused (`CLIENT PAUSE WRITE`), the relay has
   its batch locked and its XADD waiting; Redis drops the dead connection before
   resuming, so nothing is published and nothing is stamped;
2. killed after its XADD, before its commit: a test transaction holds `outbox` in SHARE
   mode, so the relay's stamping UPDATE waits; the dead relay's batch is on the stream
   and unstamped, and the next worker publishes the same batch again.
"""

from __future__ import annotations

import contextlib
import random
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.streams import order_stream
from tests.e2e.crash_stack import (
    Service,
    backend_states,
    private_redis,
    redis_addresses,
    redis_client,
    wait_disconnected,
    worker_service,
    writes_paused,
)
from tests.e2e.matching_checks import assert_consistent, wait_streams_drained
from tests.support.engine import MatchingProcess, matching_settings, wait_settled
from tests.support.order_flow import SYMBOLS, create_traders
from tests.support.orders_sql import Sent, Trader, place_order, request_cancel
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("instruments")]
__all__ = ["private_redis"]  # the fixture, used by name

BACKLOG = 2000  # commands; the relay publishes 500 per pass
RELAY_BATCH = 500
TRADERS = 16


async def commit_backlog(engine: AsyncEngine, traders: list[Trader], seed: int) -> list[Sent]:
    """BACKLOG commands committed as intake commits them, never published: limit orders
    around the reference (a third crossing) and cancels of earlier ones."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    placed: list[Sent] = []
    while len(sent) < BACKLOG:
        async with engine.begin() as conn:
            for _ in range(50):
                if placed and rng.random() < 0.1:
                    sent.append(await request_cancel(conn, rng.choice(placed).order_id))
                    continue
                symbol = rng.choice(list(SYMBOLS))
                side = rng.choice(("buy", "sell"))
                offset = SYMBOLS[symbol] * Decimal(rng.randint(-50, 100)) / 10_000
                price = SYMBOLS[symbol] - offset if side == "buy" else SYMBOLS[symbol] + offset
                order = await place_order(
                    conn,
                    rng.choice(traders).account_id,
                    symbol,
                    side,
                    rng.randint(1, 50),
                    limit_price=price.quantize(Decimal("0.01")),
                    time_in_force=rng.choice(("day", "gtc", "ioc")),
                )
                assert order is not None
                placed.append(order)
                sent.append(order)
    return sent


async def stream_entries_added(redis: Redis) -> int:
    """Every XADD the order streams ever took (trimming does not lower it)."""
    added = 0
    for shard in range(4):
        added += int((await redis.xinfo_stream(order_stream(shard)))["entries-added"])
    return added


async def stamped(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM outbox WHERE attempts > 0"))
            ).scalar_one()
        )


async def wait_relay_in(engine: AsyncEngine, state: tuple[str, str | None]) -> None:
    """Until one of the worker's PostgreSQL sessions is in `state` (state, wait type)."""
    await eventually(
        lambda: backend_states(engine, "worker"),
        lambda states: state in states,
        timeout=30,
        interval=0.02,
        message=f"the relay's session {state}",
    )


async def kill_worker(worker: Service, redis: Redis) -> None:
    """SIGKILL, and wait until Redis has dropped its connections."""
    assert worker.process is not None
    process = psutil.Process(worker.process.pid)
    addresses = redis_addresses([process], redis)
    worker.kill()

    await wait_disconnected(redis, addresses)


async def test_worker_killed_mid_relay_loses_no_command_and_applies_none_twice(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    private_redis: str,
    smtp: SmtpSink,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    traders = await create_traders(engine, TRADERS)
    matching = MatchingProcess(
        matching_settings(servers, database_url, redis_url=private_redis), "worker-crash"
    )
    worker = worker_service(database_url, private_redis, tmp_path, smtp.port)
    try:
        matching.start()
        await matching.wait_serving(4)
        backlog = await commit_backlog(engine, traders, seed=17)
        async with redis_client(private_redis) as redis:
            # 1. Killed with its batch locked and its XADD waiting.
            async with writes_paused(redis):
                worker.start()
                await wait_relay_in(engine, ("idle in transaction", "Client"))
                await kill_worker(worker, redis)
            assert await stream_entries_added(redis) == 0
            assert await stamped(engine) == 0

            # 2. Killed after its XADD, its stamping UPDATE waiting for the table lock.
            async with engine.connect() as blocker, blocker.begin():
                await blocker.execute(text("LOCK TABLE outbox IN SHARE MODE"))
                worker.start()
                await wait_relay_in(engine, ("active", "Lock"))
                await kill_worker(worker, redis)
                # The server would notice the dead client once the lock is granted and
                # roll back; end its session now so the rows it locked are free.
                await blocker.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE application_name = 'worker' AND datname = current_database()"
                    )
                )
                assert await stream_entries_added(redis) == RELAY_BATCH
                # The next worker publishes the same (oldest, unstamped) batch again,
                # then waits on the lock like the dead one.
                worker.start()
                await eventually(
                    lambda: stream_entries_added(redis),
                    lambda added: added == 2 * RELAY_BATCH,
                    timeout=30,
                    message="the batch published again",
                )

            await wait_settled(engine, timeout=60)
            await wait_streams_drained(redis)
            counts = await assert_consistent(engine, redis)
            relayed = await stream_entries_added(redis)
    finally:
        with contextlib.suppress(Exception):
            worker.kill()
        matching.kill()

    assert relayed >= len(backlog) + RELAY_BATCH  # the first batch went out twice
    assert counts["trades"] > 100
    print(
        f"\n{len(backlog)} commands relayed ({relayed} XADDs) across 2 worker kills,"
        f" {counts} in {time.monotonic() - started:.1f}s"
    )
