"""The report outbox, with a real process dying between a batch's commit and its XADD
(the `FAULT_EXIT_AFTER_COMMIT` test hook): the execution reports PostgreSQL implies are
published, byte for byte and once, by the process that takes the shard next."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.messages import ExecutionReport, encode
from brokerx_core.streams import EXECUTIONS_STREAM
from tests.integration.engine_helpers import assert_invariants, order, trades, wait_consumed
from tests.support.engine import MatchingProcess, matching_settings
from tests.support.orders_sql import Sent, create_trader, place_order
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("instruments")]


async def outbox_rows(engine: AsyncEngine) -> list[tuple[int, int, str]]:
    """(shard, id, report) of every report in report_outbox (a row per batch, its reports
    one per line), in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT shard, id, reports FROM report_outbox ORDER BY id"))
        return [
            (int(shard), int(id_), line) for shard, id_, lines in rows for line in lines.split("\n")
        ]


async def published(redis: Redis) -> list[bytes]:
    """The `data` of every `executions` entry, in stream order."""
    return [fields[b"data"] for _id, fields in await redis.xrange(EXECUTIONS_STREAM)]


async def place_pair(engine: AsyncEngine, *, crossing: bool) -> tuple[Sent, Sent]:
    """A resting sell of 10 AAPL and a buy of 4 that crosses it or rests below it,
    committed as intake commits them (not yet published)."""
    async with engine.begin() as conn:
        seller = await create_trader(conn, shares={"AAPL": 100})
        buyer = await create_trader(conn, cash=100_000)
        sell = await place_order(conn, seller.account_id, "AAPL", "sell", 10, limit_price="190.00")
        price = "190.00" if crossing else "189.00"
        buy = await place_order(conn, buyer.account_id, "AAPL", "buy", 4, limit_price=price)
    assert sell is not None
    assert buy is not None
    return sell, buy


async def assert_reports_match_state(
    engine: AsyncEngine, payloads: list[str], sell: Sent, buy: Sent, *, crossing: bool
) -> None:
    """The committed reports are the ones the persisted orders and trades imply."""
    reports = [ExecutionReport.model_validate_json(payload) for payload in payloads]
    by_order: dict[uuid.UUID, list[ExecutionReport]] = defaultdict(list)
    for report in reports:
        by_order[report.order_id].append(report)
    expected = {
        sell.order_id: ["new", "partial_fill"] if crossing else ["new"],
        buy.order_id: ["new", "fill"] if crossing else ["new"],
    }
    assert {key: [r.event for r in value] for key, value in by_order.items()} == expected
    assert len({r.report_id for r in reports}) == len(reports)
    for order_id, order_reports in by_order.items():
        row = await order(engine, order_id)
        last = order_reports[-1]
        assert (last.status, last.filled_quantity, last.leaves_quantity, last.version) == (
            row.status,
            row.filled_quantity,
            row.quantity - row.filled_quantity,
            row.version,
        )
    fills = [r for r in reports if r.event in ("partial_fill", "fill")]
    persisted = await trades(engine)
    assert len(persisted) == (1 if crossing else 0)
    for report in fills:
        assert report.trade_id == persisted[0].id
        assert (report.fill_price, report.fill_quantity) == (persisted[0].price, 4)


@pytest.mark.parametrize(
    ("crossing", "takeover"),
    [(False, "restart"), (True, "restart"), (True, "standby")],
    ids=["no-trade-restart", "trade-restart", "trade-standby"],
)
async def test_reports_committed_before_a_crash_are_published_by_the_next_owner(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    redis: Redis,
    crossing: bool,
    takeover: str,
) -> None:
    settings = matching_settings(servers, database_url)
    faulty = MatchingProcess(settings, "outbox-faulty")
    faulty.env["FAULT_EXIT_AFTER_COMMIT"] = "1"
    standby = MatchingProcess(settings, "outbox-standby")
    try:
        faulty.start()
        await faulty.wait_serving(4)
        if takeover == "standby":
            standby.start()
            body = await eventually(standby.health, lambda body: body is not None, timeout=20)
            assert body is not None
            assert body["shards"]["owned"] == []
        sell, buy = await place_pair(engine, crossing=crossing)
        # Both commands in one MULTI: the engine reads them in one batch.
        async with redis.pipeline(transaction=True) as pipe:
            for sent in (sell, buy):
                pipe.xadd(sent.stream, encode(sent.command))  # type: ignore[arg-type]
            await pipe.execute()

        assert faulty.process is not None
        assert await asyncio.to_thread(faulty.process.wait, 30) == 137
        # The batch is committed, its reports are not on the stream: they wait in the
        # report outbox, exactly as they were to be published.
        assert (await order(engine, buy.order_id)).status == ("filled" if crossing else "new")
        assert await published(redis) == []
        left = await outbox_rows(engine)
        assert {shard for shard, _id, _payload in left} == {0}  # AAPL's shard
        payloads = [payload for _shard, _id, payload in left]
        await assert_reports_match_state(engine, payloads, sell, buy, crossing=crossing)

        if takeover == "restart":
            del faulty.env["FAULT_EXIT_AFTER_COMMIT"]
            faulty.start()
            await faulty.wait_serving(4)
        else:
            await standby.wait_serving(4)
        await wait_consumed(redis, sell.stream)  # the redelivered entries: skipped

        assert await published(redis) == [payload.encode() for payload in payloads]
        assert await outbox_rows(engine) == []
        await assert_invariants(engine)
    finally:
        faulty.kill()
        standby.kill()
