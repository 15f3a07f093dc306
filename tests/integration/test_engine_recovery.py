"""At-least-once delivery, restarts, Redis flushes and poison messages, in-process."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.messages import OrderCommand, encode
from brokerx_core.streams import BOOK_KEY, DEAD_LETTER_STREAM, MATCHING_GROUP, QUOTE_KEY
from tests.integration.engine_helpers import (
    account,
    assert_invariants,
    events,
    order,
    position,
    quote,
    reports,
    submit,
    trades,
    wait_consumed,
    wait_order,
)
from tests.support.engine import matching_settings, running_matching, wait_settled
from tests.support.orders_sql import (
    Sent,
    Trader,
    create_trader,
    place_order,
    publish,
    request_cancel,
    request_replace,
)
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")


async def trader(engine: AsyncEngine, cash: int = 0, **shares: int) -> Trader:
    async with engine.begin() as conn:
        return await create_trader(conn, cash=cash, shares=shares)


async def state(engine: AsyncEngine) -> list[tuple[object, ...]]:
    """Everything the engine writes, to compare a run with its replay."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT 'order', id::text, status, filled_quantity::text, reserved_amount::text,"
                " reserved_quantity::text FROM client_order"
                " UNION ALL SELECT 'account', id::text, cash::text, reserved_cash::text, '', ''"
                " FROM account"
                " UNION ALL SELECT 'position', account_id::text || symbol, quantity::text,"
                " reserved_quantity::text, avg_cost::text, '' FROM position"
                " UNION ALL SELECT 'trades', count(*)::text, '', '', '', '' FROM trade"
                " UNION ALL SELECT 'ledger', count(*)::text, '', '', '', '' FROM ledger_entry"
                " ORDER BY 1, 2"
            )
        )
        return [tuple(r) for r in rows]


async def crossing_pair(engine: AsyncEngine) -> tuple[Sent, Sent]:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    async with engine.begin() as conn:
        sell = await place_order(conn, seller.account_id, "AAPL", "sell", 10, limit_price="190.00")
        buy = await place_order(conn, buyer.account_id, "AAPL", "buy", 10, limit_price="190.00")
    assert sell is not None
    assert buy is not None
    return sell, buy


async def test_a_command_delivered_twice_applies_once(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    sell, buy = await crossing_pair(engine)
    async with running_matching(matching_settings(servers, database_url)):
        await publish(redis, [sell, buy])
        await wait_order(engine, buy.order_id, "filled")
        once = await state(engine)
        reported = len(await reports(redis))
        cancel = await submit(engine, redis, lambda c: request_cancel(c, sell.order_id))
        await eventually(lambda: events(redis, sell.order_id), lambda e: "cancel_rejected" in e)
        # The relay republishes everything (the same outbox ids): all are skipped.
        await publish(redis, [sell, buy, cancel])
        await wait_settled(engine)
        await wait_consumed(redis, buy.stream)
        assert await state(engine) == once
        assert len(await reports(redis)) == reported + 1  # only the first cancel_rejected
    await assert_invariants(engine)


async def test_an_applied_entry_claimed_again_after_a_crash_is_skipped(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A consumer died after the commit, before XACK: its entries stay pending and the
    next owner claims them; they must not apply twice."""
    sell, buy = await crossing_pair(engine)
    async with running_matching(matching_settings(servers, database_url)):
        await publish(redis, [sell, buy])
        await wait_order(engine, buy.order_id, "filled")
        await wait_consumed(redis, buy.stream)
    once = await state(engine)
    reported = len(await reports(redis))
    # The same entries, read by a consumer that then "dies" without acknowledging.
    await publish(redis, [sell, buy])
    await redis.xreadgroup(MATCHING_GROUP, "dead-consumer", {buy.stream: ">"}, count=10)
    assert (await redis.xpending(buy.stream, MATCHING_GROUP))["pending"] == 2
    async with running_matching(matching_settings(servers, database_url)):
        await wait_consumed(redis, buy.stream)
        assert await state(engine) == once
        assert len(await reports(redis)) == reported
    await assert_invariants(engine)


async def test_commands_without_outbox_id_fall_back_to_order_state(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    sell, buy = await crossing_pair(engine)
    bare = [Sent(s.stream, s.command.model_copy(update={"outbox_id": None})) for s in (sell, buy)]
    async with running_matching(matching_settings(servers, database_url)):
        await publish(redis, [*bare, *bare])
        await wait_order(engine, buy.order_id, "filled")
        await wait_consumed(redis, buy.stream)
        assert len(await trades(engine)) == 1
        assert await events(redis, buy.order_id) == ["new", "fill"]


async def test_restart_rebuilds_the_book_with_its_priorities(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    seller_a, seller_b = await trader(engine, AAPL=100), await trader(engine, AAPL=100)
    buyer = await trader(engine, cash=100_000)
    async with running_matching(matching_settings(servers, database_url)):
        first = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller_a.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        second = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller_b.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        await wait_order(engine, second.order_id, "new")
    await redis.delete(QUOTE_KEY.format(symbol="AAPL"), BOOK_KEY.format(symbol="AAPL"))
    async with running_matching(matching_settings(servers, database_url)):
        md = await quote(redis, "AAPL")  # rewritten by recovery
        assert md is not None
        assert (md["ask"], md["ask_size"]) == ("190.0000", 20)
        book = json.loads(await redis.get(BOOK_KEY.format(symbol="AAPL")))
        assert book["asks"] == [["190.0000", 20]]
        third = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller_a.account_id, "AAPL", "sell", 5, limit_price="190.00"),
        )
        row = await wait_order(engine, third.order_id, "new")
        assert row.priority_seq > (await order(engine, second.order_id)).priority_seq
        buy = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="190.00"),
        )
        await wait_order(engine, buy.order_id, "filled")
        assert (await order(engine, first.order_id)).status == "filled"
        assert (await order(engine, second.order_id)).status == "new"
    await assert_invariants(engine)


async def test_orders_committed_but_never_published_are_applied_at_start(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """The api crashed between its commits and the XADDs: recovery applies the orders in
    intake order and consumes their outbox rows. Two bids at one price then a sell for
    one lot: only intake order decides which bid trades (the earlier one, by time
    priority), and a sell applied first would trade with whichever bid came next."""
    early, late = await trader(engine, cash=100_000), await trader(engine, cash=100_000)
    seller = await trader(engine, AAPL=100)
    placed = []
    for who, side in ((early, "buy"), (late, "buy"), (seller, "sell")):
        async with engine.begin() as conn:  # one intake transaction each, in this order
            sent = await place_order(conn, who.account_id, "AAPL", side, 10, limit_price="190.00")
        assert sent is not None
        placed.append(sent)
    first_bid, second_bid, sell = placed
    async with running_matching(matching_settings(servers, database_url)):
        await wait_settled(engine, timeout=5)
        assert (await order(engine, first_bid.order_id)).status == "filled"
        assert (await order(engine, second_bid.order_id)).status == "new"
        assert (await order(engine, sell.order_id)).status == "filled"
        [trade] = await trades(engine)
        assert (trade.buy_order_id, trade.sell_order_id) == (first_bid.order_id, sell.order_id)
        assert trade.aggressor_side == "sell"
        assert await events(redis, first_bid.order_id) == ["new", "fill"]
        assert await events(redis, second_bid.order_id) == ["new"]
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one() == 0
    await assert_invariants(engine)


async def test_redis_flush_is_healed(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    async with running_matching(matching_settings(servers, database_url)):
        ask = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        await wait_order(engine, ask.order_id, "new")
        await redis.flushdb()
        # An order whose XADD was lost in the flush, then one published afterwards.
        async with engine.begin() as conn:
            lost = await place_order(conn, buyer.account_id, "AAPL", "buy", 4, limit_price="190.00")
        assert lost is not None
        late = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 6, limit_price="190.00"),
        )
        await wait_order(engine, late.order_id, "filled")
        await wait_order(engine, lost.order_id, "filled")
        md = await eventually(
            lambda: quote(redis, "AAPL"), lambda q: q is not None and q["last"] is not None
        )
        assert md["ask"] is None
        await wait_settled(engine)
    assert (await order(engine, ask.order_id)).status == "filled"
    assert tuple(await position(engine, buyer, "AAPL"))[:2] == (10, 0)
    await assert_invariants(engine)


async def test_undecodable_entry_is_dead_lettered_and_the_shard_moves_on(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    sell, buy = await crossing_pair(engine)
    async with running_matching(matching_settings(servers, database_url)):
        await redis.xadd(sell.stream, {"data": b"{not json"})
        await publish(redis, [sell, buy])
        await wait_order(engine, buy.order_id, "filled")
        [(_id, letter)] = await eventually(
            lambda: redis.xrange(DEAD_LETTER_STREAM), lambda x: len(x) == 1
        )
        assert letter[b"data"] == b"{not json"
        assert letter[b"stream"] == sell.stream.encode()
        assert b"undecodable" in letter[b"error"]
        await wait_consumed(redis, sell.stream)


async def test_poison_command_goes_to_dead_letter_after_max_deliveries(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A cancel whose settlement violates a constraint (the position's reservation was
    corrupted behind the engine's back) fails every time: after `max_deliveries` it is
    dead-lettered with its error, its sender gets `cancel_rejected`, and the shard
    keeps serving."""
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    settings = matching_settings(servers, database_url, max_deliveries=3)
    async with running_matching(settings):
        ask = await submit(
            engine,
            redis,
            lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="190.00"),
        )
        await wait_order(engine, ask.order_id, "new")
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE position SET reserved_quantity = 0 WHERE account_id = :a"),
                {"a": seller.account_id},
            )
        cancel = await submit(engine, redis, lambda c: request_cancel(c, ask.order_id))
        [(_id, letter)] = await eventually(
            lambda: redis.xrange(DEAD_LETTER_STREAM), lambda x: len(x) == 1, timeout=30
        )
        assert OrderCommand.model_validate_json(letter[b"data"]) == cancel.command
        assert b"CheckViolation" in letter[b"error"]
        assert int(letter[b"deliveries"]) == 4
        assert (await events(redis, ask.order_id))[-1] == "cancel_rejected"
        assert (await reports(redis, ask.order_id))[-1].reason == "engine_error"
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
        assert left == 0
        # The shard still serves: the order is still there and trades.
        assert (await order(engine, ask.order_id)).status == "new"
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE position SET reserved_quantity = 10 WHERE account_id = :a"),
                {"a": seller.account_id},
            )
        buy = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="190.00"),
        )
        await wait_order(engine, buy.order_id, "filled")
    assert (await account(engine, seller)).cash == 1900
    await assert_invariants(engine)


async def test_a_poison_replace_gives_back_the_apis_top_up(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A replace that fails every time is retired with `replace_rejected`; like any
    refused replace of an open order, what the api reserved for its terms goes back."""
    buyer = await trader(engine, cash=100_000)
    settings = matching_settings(servers, database_url, max_deliveries=2)
    async with running_matching(settings):
        bid = await submit(
            engine,
            redis,
            lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="185.00"),
        )
        await wait_order(engine, bid.order_id, "new")
        async with engine.begin() as conn:
            grow = await request_replace(conn, bid.order_id, version=1, quantity=12)
        assert grow is not None
        assert (await account(engine, buyer)).reserved_cash == 2220  # topped up by 370.00
        # What reaches the engine cannot be stored (quantity beyond BIGINT): it fails at
        # every delivery.
        poison = grow.command.model_copy(update={"new_quantity": 2**63})
        await publish(redis, [Sent(grow.stream, poison)])
        await eventually(
            lambda: redis.xrange(DEAD_LETTER_STREAM), lambda x: len(x) == 1, timeout=30
        )
        assert (await events(redis, bid.order_id))[-1] == "replace_rejected"
        assert (await reports(redis, bid.order_id))[-1].reason == "engine_error"
        row = await order(engine, bid.order_id)
        assert (row.status, row.version, row.quantity, row.reserved_amount) == (
            "new",
            1,
            10,
            1850,
        )
        assert (await account(engine, buyer)).reserved_cash == 1850
    await assert_invariants(engine)


async def test_unsettleable_pending_order_is_rejected_by_recovery(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A pending_new order whose fill cannot settle (its buyer has no cash behind the
    reservation) must not block recovery: it is rejected with `engine_error`."""
    seller, broke = await trader(engine, AAPL=100), await trader(engine)
    async with engine.begin() as conn:
        ask = await place_order(conn, seller.account_id, "AAPL", "sell", 10, limit_price="190.00")
        assert ask is not None
        order_id = uuid.uuid4()
        await conn.execute(
            text(
                "INSERT INTO client_order (id, account_id, symbol, side, type, quantity,"
                " limit_price, status)"
                " VALUES (:id, :a, 'AAPL', 'buy', 'limit', 10, 190, 'pending_new')"
            ),
            {"id": order_id, "a": broke.account_id},
        )
    async with running_matching(matching_settings(servers, database_url)):
        row = await wait_order(engine, order_id, "rejected")
        assert row.reject_reason == "engine_error"
        assert (await order(engine, ask.order_id)).status == "new"
        assert await events(redis, order_id) == ["rejected"]
    await assert_invariants(engine)


async def test_unknown_command_type_is_dead_lettered(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    command = OrderCommand(
        type="cancel", order_id=uuid.uuid4(), symbol="AAPL", version=1, ts="2026-01-01T00:00:00Z"
    )
    fields = encode(command)
    fields["data"] = fields["data"].replace('"type":"cancel"', '"type":"explode"')
    async with running_matching(matching_settings(servers, database_url)):
        await redis.xadd("orders.0", fields)
        await redis.xadd("orders.3", fields)
        letters = await eventually(lambda: redis.xrange(DEAD_LETTER_STREAM), lambda x: len(x) == 2)
        assert sorted(f[b"stream"] for _i, f in letters) == [b"orders.0", b"orders.3"]


async def test_a_fault_failing_every_command_halts_the_shard_instead_of_rejecting_all(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """A systemic fault (here a trigger refusing every order change but a rejection, as
    a bad deploy could) is not poison: after `poison_streak_limit` commands retired in
    a row the shard stops retiring them, and applies the rest once the fault is gone."""
    seller = await trader(engine, AAPL=100)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_fills() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN IF NEW.status <> 'rejected' THEN RAISE EXCEPTION 'broken';"
                " END IF; RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_fills BEFORE UPDATE ON client_order"
                " FOR EACH ROW EXECUTE FUNCTION refuse_fills()"
            )
        )
    settings = matching_settings(servers, database_url, poison_streak_limit=3)
    try:
        async with running_matching(settings):
            halted = (
                REGISTRY.get_sample_value(
                    "brokerx_engine_commands_total", {"type": "any", "outcome": "halted"}
                )
                or 0.0
            )
            sells = []
            async with engine.begin() as conn:
                for price in range(191, 197):
                    sells.append(
                        await place_order(
                            conn, seller.account_id, "AAPL", "sell", 1, limit_price=str(price)
                        )
                    )
            await publish(redis, sells)
            await eventually(
                lambda: asyncio.sleep(
                    0,
                    REGISTRY.get_sample_value(
                        "brokerx_engine_commands_total", {"type": "any", "outcome": "halted"}
                    ),
                ),
                lambda value: (value or 0.0) > halted,
                timeout=30,
                message="the shard never halted",
            )
            async with engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER refuse_fills ON client_order"))
            await wait_settled(engine, timeout=40)
            statuses = [(await order(engine, s.order_id)).status for s in sells if s]
            assert statuses.count("rejected") == 3
            assert statuses.count("new") == 3
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS refuse_fills ON client_order"))
            await conn.execute(text("DROP FUNCTION IF EXISTS refuse_fills()"))
    await assert_invariants(engine)


async def test_commands_retried_during_a_halt_are_not_dead_lettered_afterwards(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    """Cancels that fail because of a systemic fault: the first `poison_streak_limit`
    are retired (cancel_rejected), then the shard halts without counting deliveries, and
    once the fault is gone the remaining cancels apply instead of being dead-lettered."""
    seller = await trader(engine, AAPL=100)
    settings = matching_settings(servers, database_url, poison_streak_limit=3, max_deliveries=2)
    async with running_matching(settings):
        sells = []
        for price in range(191, 197):
            sent = await submit(
                engine,
                redis,
                lambda c, p=price: place_order(
                    c, seller.account_id, "AAPL", "sell", 1, limit_price=str(p)
                ),
            )
            sells.append(sent)
        await wait_order(engine, sells[-1].order_id, "new")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_all() RETURNS trigger LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'broken'; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_all BEFORE UPDATE ON client_order"
                    " FOR EACH ROW EXECUTE FUNCTION refuse_all()"
                )
            )
        try:
            async with engine.begin() as conn:
                cancels = [await request_cancel(conn, s.order_id) for s in sells]
            await publish(redis, cancels)
            letters = await eventually(
                lambda: redis.xrange(DEAD_LETTER_STREAM), lambda x: len(x) == 3, timeout=30
            )
            halted_for = await eventually(
                lambda: redis.xpending_range(
                    sells[0].stream, MATCHING_GROUP, min="-", max="+", count=10
                ),
                lambda rows: len(rows) == 3,
            )
            assert all(row["times_delivered"] <= 2 for row in halted_for)
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("DROP TRIGGER IF EXISTS refuse_all ON client_order"))
                await conn.execute(text("DROP FUNCTION IF EXISTS refuse_all()"))
        await wait_settled(engine, timeout=40)
        await wait_consumed(redis, sells[0].stream)
        statuses = [(await order(engine, s.order_id)).status for s in sells]
        assert statuses == ["new"] * 3 + ["canceled"] * 3
        assert len(await redis.xrange(DEAD_LETTER_STREAM)) == len(letters) == 3
        assert [(await events(redis, s.order_id))[-1] for s in sells[:3]] == ["cancel_rejected"] * 3
    await assert_invariants(engine)
