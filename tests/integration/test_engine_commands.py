"""Cancel, replace and expire commands applied by the in-process engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_matching.service import MatchingService
from tests.integration.engine_helpers import (
    account,
    assert_invariants,
    dec,
    events,
    order,
    position,
    reports,
    submit,
    trades,
    wait_order,
)
from tests.support.engine import matching_settings, running_matching
from tests.support.orders_sql import (
    Sent,
    Trader,
    create_trader,
    place_order,
    publish,
    request_cancel,
    request_expire,
    request_replace,
)
from tests.support.polling import eventually
from tests.support.servers import ServerUrls


@pytest.fixture
async def matching(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, instruments: None
) -> AsyncIterator[MatchingService]:
    async with running_matching(matching_settings(servers, database_url)) as service:
        yield service


async def trader(engine: AsyncEngine, cash: int = 0, **shares: int) -> Trader:
    async with engine.begin() as conn:
        return await create_trader(conn, cash=cash, shares=shares)


async def resting_sells(
    engine: AsyncEngine, redis: Redis, seller: Trader, *prices: str, quantity: int = 10
) -> list[uuid.UUID]:
    ids = []
    for price in prices:
        sent = await submit(
            engine,
            redis,
            lambda c, p=price: place_order(
                c, seller.account_id, "AAPL", "sell", quantity, limit_price=p
            ),
        )
        await wait_order(engine, sent.order_id, "new")
        ids.append(sent.order_id)
    return ids


async def replace(engine: AsyncEngine, redis: Redis, order_id: uuid.UUID, **terms: Any) -> None:
    row = await order(engine, order_id)
    await submit(
        engine,
        redis,
        lambda c: request_replace(c, order_id, version=terms.pop("version", row.version), **terms),
    )


async def wait_version(engine: AsyncEngine, order_id: uuid.UUID, version: int) -> Any:
    return await eventually(
        lambda: order(engine, order_id),
        lambda row: row.version == version,
        message=f"order never reached version {version}",
    )


async def buy_now(engine: AsyncEngine, redis: Redis, buyer: Trader, quantity: int) -> None:
    sent = await submit(
        engine,
        redis,
        lambda c: place_order(
            c, buyer.account_id, "AAPL", "buy", quantity, limit_price="190.00", time_in_force="ioc"
        ),
    )
    await wait_order(engine, sent.order_id, "filled", "canceled")


@pytest.mark.usefixtures("matching")
async def test_quantity_decrease_keeps_time_priority(engine: AsyncEngine, redis: Redis) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    first, second = await resting_sells(engine, redis, seller, "190.00", "190.00")
    seq = (await order(engine, first)).priority_seq
    await replace(engine, redis, first, quantity=4)
    row = await wait_version(engine, first, 2)
    assert (row.quantity, row.priority_seq, row.reserved_quantity) == (4, seq, 4)
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 14)
    await buy_now(engine, redis, buyer, 4)
    assert (await order(engine, first)).status == "filled"
    assert (await order(engine, second)).status == "new"
    assert await events(redis, first) == ["new", "replaced", "fill"]
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_quantity_increase_and_price_change_lose_time_priority(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    first, second, third = await resting_sells(engine, redis, seller, "190.00", "190.00", "190.00")
    await replace(engine, redis, first, quantity=12)
    await wait_version(engine, first, 2)
    await replace(engine, redis, second, limit_price="190.01")
    await wait_version(engine, second, 2)
    await replace(engine, redis, second, limit_price="190.00")
    back = await wait_version(engine, second, 3)
    assert back.priority_seq > (await order(engine, first)).priority_seq
    # Queue at 190.00 is now: third, first (grew), second (moved away and back).
    await buy_now(engine, redis, buyer, 10)
    assert (await order(engine, third)).status == "filled"
    assert (await order(engine, first)).status == "new"
    await buy_now(engine, redis, buyer, 12)
    assert (await order(engine, first)).status == "filled"
    assert (await order(engine, second)).status == "new"
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_replace_to_a_crossing_price_trades_and_frees_reservation(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=10_000)
    [ask] = await resting_sells(engine, redis, seller, "190.00")
    bid = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="188.00"),
    )
    await wait_order(engine, bid.order_id, "new")
    await replace(engine, redis, bid.order_id, limit_price="191.00")  # api tops up 30.00
    row = await wait_order(engine, bid.order_id, "filled")
    assert (row.version, row.avg_fill_price, row.reserved_amount) == (2, dec("190"), 0)
    assert (await order(engine, ask)).status == "filled"
    assert tuple(await account(engine, buyer)) == (dec("8100.00"), dec("0.00"))
    assert await events(redis, bid.order_id) == ["new", "replaced", "fill"]
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_replace_lowering_a_buy_releases_cash(engine: AsyncEngine, redis: Redis) -> None:
    buyer = await trader(engine, cash=10_000)
    bid = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="188.00"),
    )
    await wait_order(engine, bid.order_id, "new")
    await replace(engine, redis, bid.order_id, quantity=5, limit_price="187.00")
    row = await wait_version(engine, bid.order_id, 2)
    assert row.reserved_amount == dec("935.00")
    assert (await account(engine, buyer)).reserved_cash == dec("935.00")
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_replace_rejections(engine: AsyncEngine, redis: Redis) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    [ask] = await resting_sells(engine, redis, seller, "190.00", quantity=50)
    await buy_now(engine, redis, buyer, 20)
    await replace(engine, redis, ask, version=1, quantity=20)  # at or below what filled
    await replace(engine, redis, ask, version=7, quantity=30)  # stale If-Match
    rejected = await eventually(
        lambda: reports(redis, ask),
        lambda rs: len([r for r in rs if r.event == "replace_rejected"]) == 2,
    )
    reasons = [r.reason for r in rejected if r.event == "replace_rejected"]
    assert reasons == ["quantity_below_filled", "version_conflict"]
    row = await order(engine, ask)
    assert (row.version, row.quantity, row.status, row.reserved_quantity) == (
        1,
        50,
        "partially_filled",
        30,
    )
    await assert_invariants(engine)


async def rejected_replaces(redis: Redis, order_id: uuid.UUID, count: int) -> list[str | None]:
    found = await eventually(
        lambda: reports(redis, order_id),
        lambda rs: len([r for r in rs if r.event == "replace_rejected"]) == count,
    )
    return [r.reason for r in found if r.event == "replace_rejected"]


async def buy_topped_up_then_filled(
    engine: AsyncEngine, redis: Redis, buyer: Trader, seller: Trader
) -> tuple[uuid.UUID, Sent]:
    """A buy of 100 @ 185.00 (18,500.00 reserved) whose replace to 95 @ 200.00 is written
    (the api tops it up by 500.00 to 19,000.00) before 96 shares fill at 185.00, and
    reaches the engine after them: it is refused (95 <= 96 filled)."""
    bid = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 100, limit_price="185.00"),
    )
    await wait_order(engine, bid.order_id, "new")
    async with engine.begin() as conn:
        change = await request_replace(
            conn, bid.order_id, version=1, quantity=95, limit_price="200.00"
        )
    assert change is not None
    assert (await order(engine, bid.order_id)).reserved_amount == dec("19000.00")
    await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "AAPL", "sell", 96, limit_price="185.00"),
    )
    row = await wait_order(engine, bid.order_id, "partially_filled")
    # 96 × 185.00 = 17,760.00 consumed: 1,240.00 left for 4 shares that need 740.00.
    assert (row.filled_quantity, row.reserved_amount) == (96, dec("1240.00"))
    return bid.order_id, change


@pytest.mark.usefixtures("matching")
async def test_a_refused_replace_gives_back_the_apis_top_up(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    bid, change = await buy_topped_up_then_filled(engine, redis, buyer, seller)
    await publish(redis, [change])
    assert await rejected_replaces(redis, bid, 1) == ["quantity_below_filled"]
    row = await order(engine, bid)
    assert (row.version, row.quantity, row.limit_price, row.status) == (
        1,
        100,
        dec("185.0000"),
        "partially_filled",
    )
    assert row.reserved_amount == dec("740.00")  # 4 × 185.00: the 500.00 top-up is back
    assert tuple(await account(engine, buyer)) == (dec("82240.00"), dec("740.00"))
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_a_refused_replace_keeps_what_a_later_replace_counts_on(
    engine: AsyncEngine, redis: Redis
) -> None:
    """A second replace with the same version, written before the first is refused,
    found the first one's top-up enough for its own terms: it must still be there when
    the second is applied."""
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    bid, change = await buy_topped_up_then_filled(engine, redis, buyer, seller)
    async with engine.begin() as conn:
        # 6 leaves × 200.00 = 1,200.00 <= the 1,240.00 held: no top-up.
        later = await request_replace(conn, bid, version=1, quantity=102, limit_price="200.00")
    assert later is not None
    await publish(redis, [change])
    assert await rejected_replaces(redis, bid, 1) == ["quantity_below_filled"]
    assert (await order(engine, bid)).reserved_amount == dec("1240.00")
    await publish(redis, [later])
    row = await wait_version(engine, bid, 2)
    assert (row.quantity, row.limit_price, row.reserved_amount) == (
        102,
        dec("200.0000"),
        dec("1200.00"),
    )
    assert tuple(await account(engine, buyer)) == (dec("82240.00"), dec("1200.00"))
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_a_refused_replace_of_a_sell_gives_back_the_shares(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, AAPL=100)
    [ask] = await resting_sells(engine, redis, seller, "191.00", quantity=10)
    async with engine.begin() as conn:
        stale = await request_replace(conn, ask, version=3, quantity=25)  # tops up 15
    assert stale is not None
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 25)
    await publish(redis, [stale])
    assert await rejected_replaces(redis, ask, 1) == ["version_conflict"]
    assert (await order(engine, ask)).reserved_quantity == 10
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 10)
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_cancel_or_replace_after_fill_is_rejected(engine: AsyncEngine, redis: Redis) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    [ask] = await resting_sells(engine, redis, seller, "190.00")
    # The cancel and replace are requested while the order is open but reach the engine
    # after the buy that fills it.
    async with engine.begin() as conn:
        cancel = await request_cancel(conn, ask)
        change = await request_replace(conn, ask, version=1, quantity=5)
        buy = await place_order(conn, buyer.account_id, "AAPL", "buy", 10, limit_price="190.00")
    await publish(redis, [buy, cancel, change])
    await eventually(
        lambda: events(redis, ask),
        lambda evs: evs == ["new", "fill", "cancel_rejected", "replace_rejected"],
    )
    last = (await reports(redis, ask))[-2:]
    assert [r.reason for r in last] == ["too_late", "too_late"]
    row = await order(engine, ask)
    assert (row.status, row.version, row.filled_quantity) == ("filled", 1, 10)
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_cancel_before_the_order_reaches_the_book(engine: AsyncEngine, redis: Redis) -> None:
    seller, buyer = await trader(engine, AAPL=100), await trader(engine, cash=100_000)
    async with engine.begin() as conn:
        sell = await place_order(conn, seller.account_id, "AAPL", "sell", 10, limit_price="190.00")
    assert sell is not None
    await submit(engine, redis, lambda c: request_cancel(c, sell.order_id))
    await wait_order(engine, sell.order_id, "canceled")
    # Its new_order arrives late (say, from the relay): the order never enters the book.
    await publish(redis, [sell])
    await buy_now(engine, redis, buyer, 10)
    assert await trades(engine) == []
    assert await events(redis, sell.order_id) == ["canceled"]
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 0)
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_expire_day_orders_only(engine: AsyncEngine, redis: Redis) -> None:
    seller = await trader(engine, AAPL=100)
    day = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="195.00"),
    )
    gtc = await submit(
        engine,
        redis,
        lambda c: place_order(
            c, seller.account_id, "AAPL", "sell", 10, limit_price="196.00", time_in_force="gtc"
        ),
    )
    await wait_order(engine, gtc.order_id, "new")
    await submit(engine, redis, lambda c: request_expire(c, gtc.order_id))
    await submit(engine, redis, lambda c: request_expire(c, day.order_id))
    row = await wait_order(engine, day.order_id, "expired")
    assert row.reserved_quantity == 0
    assert (await order(engine, gtc.order_id)).status == "new"
    assert await events(redis, day.order_id) == ["new", "expired"]
    assert await events(redis, gtc.order_id) == ["new"]
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 10)
    await assert_invariants(engine)
