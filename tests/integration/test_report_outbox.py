"""The report outbox in normal operation (in-process, real PostgreSQL and Redis): every
report goes through it once, published rows are deleted, nothing is published twice,
rows left by a previous owner are republished in order when a shard is taken, and those
of shards that no longer exist (MATCHING_SHARDS lowered) when shard 0 is taken. The
crash between commit and XADD is tests/e2e/test_report_outbox_crash.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.streams import EXECUTIONS_STREAM
from brokerx_matching.service import MatchingService
from brokerx_matching.settings import MatchingSettings
from tests.integration.engine_helpers import (
    assert_invariants,
    events,
    reports,
    submit,
    wait_consumed,
    wait_order,
)
from tests.support.engine import matching_settings, running_matching, wait_settled
from tests.support.orders_sql import create_trader, place_order, request_cancel
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")


async def outbox_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM report_outbox"))).scalar_one())


async def outbox_inserted(engine: AsyncEngine) -> int:
    """Rows ever inserted since the test's TRUNCATE … RESTART IDENTITY (sequences are
    not transactional: what the engine's statements drew is visible at once)."""
    async with engine.connect() as conn:
        last_value, is_called = (
            await conn.execute(text("SELECT last_value, is_called FROM report_outbox_id_seq"))
        ).one()
    return int(last_value) if is_called else 0


async def test_reports_pass_through_the_outbox_once_and_leave_it(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    async with engine.begin() as conn:
        seller = await create_trader(conn, shares={"AAPL": 100, "MSFT": 100})
        buyer = await create_trader(conn, cash=100_000)
    settings = matching_settings(servers, database_url)
    async with running_matching(settings):
        # One batch at a time: batches without trades (rest, cancel) and with trades.
        sell = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        await wait_order(engine, sell.order_id, "new")
        buy = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 4, limit_price="190.00"),
        )
        await wait_order(engine, buy.order_id, "filled")
        msft = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller.account_id, "MSFT", "sell", 5, limit_price="420.00"),
        )
        await wait_order(engine, msft.order_id, "new")
        await submit(engine, redis, lambda c: request_cancel(c, sell.order_id))
        await wait_order(engine, sell.order_id, "canceled")
        await wait_settled(engine)
        # Idle: the last batch's rows go with the next round trip on the shard's
        # connection; none is left while the service runs.
        await eventually(lambda: outbox_count(engine), lambda n: n == 0, timeout=5)

        published = await reports(redis)
        assert await events(redis, sell.order_id) == ["new", "partial_fill", "canceled"]
        assert await events(redis, buy.order_id) == ["new", "fill"]
        assert await events(redis, msft.order_id) == ["new"]
        assert len(published) == 6
        # One outbox row per batch with reports (sell rests; buy fills; MSFT rests;
        # cancel), and each report was published once.
        assert await outbox_inserted(engine) == 4
        assert len({r.report_id for r in published}) == len(published)

    # A graceful restart finds nothing to republish.
    async with running_matching(settings):
        await wait_consumed(redis, sell.stream)
        assert await outbox_count(engine) == 0
        assert [r.report_id for r in await reports(redis)] == [r.report_id for r in published]
    await assert_invariants(engine)


async def outbox_report_ids(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT reports FROM report_outbox ORDER BY id"))
        return [json.loads(line)["report_id"] for (lines,) in rows for line in lines.split("\n")]


async def test_each_batch_deletes_the_rows_of_the_batch_published_before_it(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """Under load the rows go with the shard's next batch statement, not the idle probe
    (which long reads keep away here: it runs only after a read found nothing)."""
    async with engine.begin() as conn:
        seller = await create_trader(conn, shares={"AAPL": 100})
        buyer = await create_trader(conn, cash=100_000)
    async with running_matching(matching_settings(servers, database_url, block_ms=5000)):
        sell = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        await eventually(lambda: events(redis, sell.order_id), lambda e: e == ["new"])
        assert len(await outbox_report_ids(engine)) == 1  # published, not yet deleted
        # A batch with trades (two statements in a transaction).
        buy = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 4, limit_price="190.00"),
        )
        await eventually(lambda: events(redis, buy.order_id), lambda e: e == ["new", "fill"])
        second = [r.report_id for r in (await reports(redis))[1:]]
        assert len(second) == 3  # buy new, buy fill, sell partial_fill
        assert await outbox_report_ids(engine) == second
        # A batch without trades (one statement).
        await submit(engine, redis, lambda c: request_cancel(c, sell.order_id))
        await eventually(lambda: events(redis, sell.order_id), lambda e: e[-1] == "canceled")
        canceled = (await reports(redis, sell.order_id))[-1]
        assert await outbox_report_ids(engine) == [canceled.report_id]


async def test_rows_left_in_the_outbox_are_republished_in_order_when_a_shard_is_taken(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """What a process that died after committing leaves behind: each shard's rows go
    out in id order when its new owner takes it, then leave the outbox."""
    rows = [(shard, json.dumps({"shard": shard, "n": n})) for n in range(3) for shard in (0, 2)]
    async with engine.begin() as conn:
        for shard, payload in rows:
            await conn.execute(
                text("INSERT INTO report_outbox (shard, reports) VALUES (:s, :p)"),
                {"s": shard, "p": payload},
            )
        # A batch's row holds its reports one per line.
        batch = "\n".join(json.dumps({"shard": 3, "n": n}) for n in range(3))
        await conn.execute(
            text("INSERT INTO report_outbox (shard, reports) VALUES (3, :p)"), {"p": batch}
        )
    async with running_matching(matching_settings(servers, database_url)):
        assert await outbox_count(engine) == 0  # recovered shards have republished
        entries = await redis.xrange(EXECUTIONS_STREAM)
    sent = [json.loads(fields[b"data"]) for _id, fields in entries]
    assert sorted(sent, key=lambda r: (r["shard"], r["n"])) == [
        json.loads(payload) for _shard, payload in sorted(rows)
    ] + [{"shard": 3, "n": n} for n in range(3)]
    for shard in (0, 2, 3):
        assert [r["n"] for r in sent if r["shard"] == shard] == [0, 1, 2]


@contextlib.asynccontextmanager
async def serving_shard_zero_only(settings: MatchingSettings) -> AsyncIterator[None]:
    """The matching service owning shard 0 alone (`max_owned_shards=1`: it tries the
    shards in order), once shard 0 serves."""
    service = MatchingService(settings)
    task = asyncio.create_task(service.serve(), name="matching-shard-0")

    async def serving() -> list[int]:
        if task.done():
            task.result()  # surface the crash
        return service.shards.serving_shards

    try:
        await eventually(serving, lambda s: s == [0], timeout=15, message="shard 0 not served")
        yield
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


async def test_shard_zero_republishes_the_rows_of_shards_that_no_longer_exist(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """MATCHING_SHARDS was lowered from 6 to 4: shards 4 and 5 have no owner any more.
    Their rows go out in id order, and leave the outbox, when shard 0 is taken; the rows
    of shards 1 and 3 are their own owners' business and stay where they are."""
    rows = [
        (5, json.dumps({"shard": 5, "n": 0})),
        (1, json.dumps({"shard": 1, "n": 0})),
        (4, "\n".join(json.dumps({"shard": 4, "n": n}) for n in range(2))),  # one batch
        (3, json.dumps({"shard": 3, "n": 0})),
        (5, json.dumps({"shard": 5, "n": 1})),
    ]
    async with engine.begin() as conn:
        for shard, payload in rows:
            await conn.execute(
                text("INSERT INTO report_outbox (shard, reports) VALUES (:s, :p)"),
                {"s": shard, "p": payload},
            )
    settings = matching_settings(servers, database_url, matching_shards=4, max_owned_shards=1)

    async with serving_shard_zero_only(settings):
        entries = await redis.xrange(EXECUTIONS_STREAM)
        async with engine.connect() as conn:
            left = (
                await conn.execute(text("SELECT shard, reports FROM report_outbox ORDER BY id"))
            ).all()

    sent = [json.loads(fields[b"data"]) for _id, fields in entries]
    assert [(r["shard"], r["n"]) for r in sent] == [(5, 0), (4, 0), (4, 1), (5, 1)]
    assert [tuple(row) for row in left] == [rows[1], rows[3]]
