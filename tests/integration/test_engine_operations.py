"""Operating the matching service: shard ownership and fencing, health, metrics, stream
housekeeping (in-process services on real PostgreSQL and Redis)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.messages import encode
from brokerx_core.streams import (
    EXECUTIONS_STREAM,
    MATCHING_GROUP,
    NOTIFIER_GROUP,
    order_stream_for,
)
from brokerx_matching.executions_stream import executions_housekeeping
from brokerx_matching.service import MatchingService
from tests.integration.engine_helpers import (
    assert_invariants,
    submit,
    trades,
    wait_consumed,
    wait_order,
)
from tests.support.engine import matching_settings, running_matching
from tests.support.orders_sql import Trader, create_trader, place_order, publish
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")


async def trader(engine: AsyncEngine, cash: int = 0, **shares: int) -> Trader:
    async with engine.begin() as conn:
        return await create_trader(conn, cash=cash, shares=shares)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def cross(engine: AsyncEngine, redis: Redis, symbol: str = "AAPL") -> None:
    seller, buyer = await trader(engine, **{symbol: 10}), await trader(engine, cash=100_000)
    ask = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, symbol, "sell", 10, limit_price="190.00"),
    )
    await wait_order(engine, ask.order_id, "new")
    bid = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, symbol, "buy", 10, limit_price="190.00"),
    )
    await wait_order(engine, bid.order_id, "filled")


async def test_health_and_metrics_report_what_the_engine_does(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    before = {
        "trades": sample("brokerx_trades_total"),
        "applied": sample("brokerx_engine_commands_total", type="new_order", outcome="applied"),
        "batches": sample("brokerx_engine_batch_seconds_count"),
        "fills": sample("brokerx_intake_to_fill_seconds_count"),
    }
    async with running_matching(matching_settings(servers, database_url)) as service:
        status, body = await service.health()
        assert status == 200
        assert body["checks"] == {"database": True, "redis": True}
        assert body["shards"] == {"owned": [0, 1, 2, 3], "serving": [0, 1, 2, 3], "total": 4}
        assert sample("brokerx_shards_owned") == 4
        await cross(engine, redis)
        assert sample("brokerx_trades_total") == before["trades"] + 1
        applied = sample("brokerx_engine_commands_total", type="new_order", outcome="applied")
        assert applied == before["applied"] + 2
        assert sample("brokerx_engine_batch_seconds_count") >= before["batches"] + 2
        assert sample("brokerx_intake_to_fill_seconds_count") == before["fills"] + 1
        await eventually(
            lambda: asyncio.sleep(
                0, sample("brokerx_stream_lag", stream="orders.0", group="matching")
            ),
            lambda lag: lag == 0,
        )
    assert sample("brokerx_shards_owned") == 0


async def test_a_shard_whose_lock_connection_dies_moves_to_the_standby(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """Killing the PostgreSQL session that holds shard 0's lock fences its owner (it can
    no longer commit) and frees the lock: one of the two processes takes it, never both."""
    settings = matching_settings(servers, database_url)
    async with running_matching(settings) as active:
        standby = MatchingService(matching_settings(servers, database_url))
        standby_task = asyncio.create_task(standby.serve())
        try:
            await eventually(lambda: asyncio.sleep(0, standby.shards.first_round.is_set()))
            assert standby.shards.owned_shards == []
            async with engine.begin() as conn:
                killed = (
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_locks"
                            " WHERE locktype = 'advisory' AND granted AND objid = :key"
                            # pg_locks is server-wide: not another run's shard 0.
                            " AND database = (SELECT oid FROM pg_database"
                            "                 WHERE datname = current_database())"
                        ),
                        {"key": settings.shard_lock_base},
                    )
                ).scalar_one()
            assert killed is True

            def owners() -> list[list[int]]:
                return [active.shards.serving_shards, standby.shards.serving_shards]

            owned = await eventually(
                lambda: asyncio.sleep(0, owners()),
                lambda o: sorted(o[0] + o[1]) == [0, 1, 2, 3],
                message="shard 0 was not taken back",
            )
            assert set(owned[0]).isdisjoint(owned[1])
            await cross(engine, redis, "AAPL")  # shard 0 serves again
            assert len(await trades(engine)) == 1
        finally:
            standby.stop.set()
            await standby_task
    await assert_invariants(engine)


async def test_entries_left_with_a_consumer_that_lost_its_shard_are_claimed(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A process that lost its lock may have read entries just before noticing: once
    idle for `claim_idle_ms` they are claimed and applied by the owner."""
    seller = await trader(engine, AAPL=10)
    async with running_matching(matching_settings(servers, database_url, claim_idle_ms=300)):
        async with engine.begin() as conn:
            sent = await place_order(
                conn, seller.account_id, "AAPL", "sell", 10, limit_price="191.00"
            )
        assert sent is not None
        # XADD and the other consumer's read in one transaction: it gets the entry first.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(sent.stream, encode(sent.command))  # type: ignore[arg-type]
            pipe.xreadgroup(MATCHING_GROUP, "lost-owner", {sent.stream: ">"}, count=1)
            await pipe.execute()
        await wait_order(engine, sent.order_id, "new")
        await wait_consumed(redis, sent.stream)


async def test_order_streams_are_trimmed_below_what_the_group_acknowledged(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, AAPL=100)
    async with running_matching(matching_settings(servers, database_url)):
        for price in ("191.00", "192.00", "193.00", "194.00", "195.00"):
            sent = await submit(
                engine,
                redis,
                lambda c, p=price: place_order(
                    c, seller.account_id, "AAPL", "sell", 1, limit_price=p
                ),
            )
        await wait_order(engine, sent.order_id, "new")
        await eventually(lambda: redis.xlen(sent.stream), lambda length: length <= 1)
        # An entry still pending is never trimmed.
        async with engine.begin() as conn:
            held = await place_order(
                conn, seller.account_id, "AAPL", "sell", 1, limit_price="196.00"
            )
        assert held is not None
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(held.stream, encode(held.command))  # type: ignore[arg-type]
            pipe.xreadgroup(MATCHING_GROUP, "slow", {held.stream: ">"}, count=1)
            entry_id = (await pipe.execute())[0]
        # A housekeeping round ran with it pending (it counts it in the lag gauge)...
        await eventually(
            lambda: asyncio.sleep(
                0, sample("brokerx_stream_lag", stream=held.stream, group=MATCHING_GROUP)
            ),
            lambda lag: lag == 1,
        )
        # ... and trimmed only below it.
        assert [e[0] for e in await redis.xrange(held.stream)][-1] == entry_id


async def rest_sells(engine: AsyncEngine, redis: Redis, seller: Trader, count: int) -> None:
    """`count` resting sells (one `new` report each), applied and acknowledged."""
    async with engine.begin() as conn:
        sent = [
            await place_order(conn, seller.account_id, "AAPL", "sell", 1, limit_price="199.00")
            for _ in range(count)
        ]
    await publish(redis, sent)
    await wait_consumed(redis, order_stream_for("AAPL", 4))


async def test_executions_are_trimmed_only_below_what_every_group_acknowledged(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A notifier that fell behind loses nothing, however far beyond the cap
    (`executions_maxlen`, which applies only to a stream with no group)."""
    seller = await trader(engine, AAPL=1_000)
    await redis.xgroup_create(EXECUTIONS_STREAM, NOTIFIER_GROUP, id="0", mkstream=True)
    settings = matching_settings(
        servers, database_url, executions_maxlen=5, executions_retention_seconds=0
    )
    async with running_matching(settings):
        await rest_sells(engine, redis, seller, 100)
        [[_, read]] = await redis.xreadgroup(
            NOTIFIER_GROUP, "mailer", {EXECUTIONS_STREAM: ">"}, count=100
        )
        ids = [entry_id for entry_id, _ in read]
        assert len(ids) == 100
        await redis.xack(EXECUTIONS_STREAM, NOTIFIER_GROUP, *ids[:50])
        await rest_sells(engine, redis, seller, 150)
        # Trimmed exactly below the oldest entry read but not acknowledged...
        await eventually(
            lambda: redis.xrange(EXECUTIONS_STREAM, count=1),
            lambda first: first[0][0] == ids[50],
            message="executions not trimmed below the notifier's first pending entry",
        )
        # ... keeping it, the other unacknowledged ones and the 150 not read yet.
        assert await redis.xlen(EXECUTIONS_STREAM) == 200
        [[_, rest]] = await redis.xreadgroup(
            NOTIFIER_GROUP, "mailer", {EXECUTIONS_STREAM: ">"}, count=1_000
        )
        assert len(rest) == 150
        await redis.xack(EXECUTIONS_STREAM, NOTIFIER_GROUP, *ids[50:], *[e[0] for e in rest])
        # Everything acknowledged: all but the last delivered entry go.
        await eventually(lambda: redis.xlen(EXECUTIONS_STREAM), lambda length: length == 1)
    await assert_invariants(engine)


async def test_acknowledged_executions_of_the_retention_window_are_kept(redis: Redis) -> None:
    """The api's live fan-out reads outside any group: a report the notifier has
    acknowledged stays for `retention_seconds`, so a reader stalled behind it loses
    nothing; past the window (here 0) it goes."""
    await redis.xgroup_create(EXECUTIONS_STREAM, NOTIFIER_GROUP, id="0", mkstream=True)
    for n in range(20):
        await redis.xadd(EXECUTIONS_STREAM, {"n": n})
    [[_, read]] = await redis.xreadgroup(NOTIFIER_GROUP, "mailer", {EXECUTIONS_STREAM: ">"})
    await redis.xack(EXECUTIONS_STREAM, NOTIFIER_GROUP, *[entry_id for entry_id, _ in read])
    await executions_housekeeping(redis, maxlen=5, trim=True, retention_seconds=60)
    assert await redis.xlen(EXECUTIONS_STREAM) == 20
    await executions_housekeeping(redis, maxlen=5, trim=True, retention_seconds=0)
    assert await redis.xlen(EXECUTIONS_STREAM) == 1  # the last delivered entry


async def test_executions_without_any_group_are_capped(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, AAPL=1_000)
    settings = matching_settings(servers, database_url, executions_maxlen=5)
    async with running_matching(settings):
        await rest_sells(engine, redis, seller, 250)
        # MAXLEN ~ 5: whole stream nodes only, so a few more than 5 may stay.
        await eventually(lambda: redis.xlen(EXECUTIONS_STREAM), lambda length: length < 50)


async def test_two_processes_share_the_shards_when_each_is_capped(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """Scale-out: with `max_owned_shards=2`, two processes each serve two shards."""
    first = MatchingService(matching_settings(servers, database_url, max_owned_shards=2))
    second = MatchingService(matching_settings(servers, database_url, max_owned_shards=2))
    tasks = [asyncio.create_task(first.serve())]
    try:
        await eventually(
            lambda: asyncio.sleep(0, first.shards.serving_shards), lambda s: len(s) == 2
        )
        tasks.append(asyncio.create_task(second.serve()))
        await eventually(
            lambda: asyncio.sleep(0, second.shards.serving_shards), lambda s: len(s) == 2
        )
        assert sorted(first.shards.owned_shards + second.shards.owned_shards) == [0, 1, 2, 3]
        await cross(engine, redis, "AAPL")  # shard 0
        await cross(engine, redis, "MSFT")  # shard 3
        assert len(await trades(engine)) == 2
    finally:
        first.stop.set()
        second.stop.set()
        await asyncio.gather(*tasks)
