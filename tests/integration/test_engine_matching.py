"""The matching service in-process on real PostgreSQL and Redis: matching rules and
settlement as a user sees them (orders, trades, cash, positions, reports, quotes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_matching.service import MatchingService
from tests.integration.engine_helpers import (
    account,
    assert_invariants,
    dec,
    events,
    ledger,
    order,
    position,
    quote,
    reports,
    submit,
    trades,
    wait_order,
)
from tests.support.engine import matching_settings, running_matching
from tests.support.orders_sql import create_trader, place_order, request_cancel
from tests.support.servers import ServerUrls


@pytest.fixture
async def matching(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, instruments: None
) -> AsyncIterator[MatchingService]:
    async with running_matching(matching_settings(servers, database_url)) as service:
        yield service


async def trader(engine: AsyncEngine, cash: int = 0, **shares: int):  # type: ignore[no-untyped-def]
    async with engine.begin() as conn:
        return await create_trader(conn, cash=cash, shares=shares)


@pytest.mark.usefixtures("matching")
async def test_crossing_orders_trade_at_the_resting_price_and_settle(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, AAPL=100)
    buyer = await trader(engine, cash=100_000)
    sell = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price="190.00"),
    )
    await wait_order(engine, sell.order_id, "new")
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 10, limit_price="191.00"),
    )
    buy_row = await wait_order(engine, buy.order_id, "filled")
    sell_row = await order(engine, sell.order_id)

    assert sell_row.status == "filled"
    for row in (buy_row, sell_row):
        assert row.filled_quantity == 10
        assert row.avg_fill_price == dec("190")
        assert row.reserved_amount == 0
        assert row.reserved_quantity == 0
    [trade] = await trades(engine)
    assert (trade.price, trade.quantity) == (dec("190"), 10)
    assert (trade.buy_order_id, trade.sell_order_id) == (buy.order_id, sell.order_id)
    assert trade.aggressor_side == "buy"
    # Price improvement: 10 × 191 was reserved, 10 × 190 paid, the 10.00 left is free.
    assert tuple(await account(engine, buyer)) == (dec("98100.00"), dec("0.00"))
    assert tuple(await account(engine, seller)) == (dec("1900.00"), dec("0.00"))
    assert tuple(await position(engine, buyer, "AAPL")) == (10, 0, dec("190"))
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (90, 0)
    assert [(e.kind, e.amount, e.balance_after) for e in await ledger(engine, buyer)] == [
        ("deposit", dec("100000.00"), dec("100000.00")),
        ("buy", dec("-1900.00"), dec("98100.00")),
    ]
    assert [(e.kind, e.amount, e.reference_id) for e in await ledger(engine, seller)] == [
        ("sell", dec("1900.00"), trade.id)
    ]
    assert await events(redis, buy.order_id) == ["new", "fill"]
    assert await events(redis, sell.order_id) == ["new", "fill"]
    fill = (await reports(redis, buy.order_id))[-1]
    assert (fill.fill_price, fill.fill_quantity, fill.trade_id) == (dec("190"), 10, trade.id)
    assert fill.report_id == f"{buy.order_id}:1:10:fill"
    md = await quote(redis, "AAPL")
    assert md is not None
    assert (md["last"], md["last_size"], md["bid"], md["ask"]) == ("190.0000", 10, None, None)
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_partial_fill_rests_then_cancel_releases_the_rest(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, AAPL=100)
    buyer = await trader(engine, cash=10_000)
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 50, limit_price="189.50"),
    )
    await wait_order(engine, buy.order_id, "new")
    assert (await account(engine, buyer)).reserved_cash == dec("9475.00")
    sell = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "AAPL", "sell", 20, limit_price="189.00"),
    )
    await wait_order(engine, sell.order_id, "filled")
    partial = await wait_order(engine, buy.order_id, "partially_filled")
    assert (partial.filled_quantity, partial.reserved_amount) == (20, dec("5685.00"))
    # An incoming sell trades at the resting buy's price.
    assert (await trades(engine))[0].price == dec("189.50")
    assert tuple(await account(engine, buyer)) == (dec("6210.00"), dec("5685.00"))
    md = await quote(redis, "AAPL")
    assert md is not None
    assert (md["bid"], md["bid_size"]) == ("189.5000", 30)

    await submit(engine, redis, lambda c: request_cancel(c, buy.order_id))
    canceled = await wait_order(engine, buy.order_id, "canceled")
    assert (canceled.filled_quantity, canceled.reserved_amount) == (20, 0)
    assert tuple(await account(engine, buyer)) == (dec("6210.00"), dec("0.00"))
    assert await events(redis, buy.order_id) == ["new", "partial_fill", "canceled"]
    assert (await reports(redis, buy.order_id))[-1].reason == "requested"
    md = await quote(redis, "AAPL")
    assert md is not None
    assert md["bid"] is None
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_ioc_remainder_is_canceled(engine: AsyncEngine, redis: Redis) -> None:
    seller = await trader(engine, MSFT=100)
    buyer = await trader(engine, cash=100_000)
    sell = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "MSFT", "sell", 5, limit_price="420.00"),
    )
    await wait_order(engine, sell.order_id, "new")
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(
            c, buyer.account_id, "MSFT", "buy", 8, limit_price="421.00", time_in_force="ioc"
        ),
    )
    row = await wait_order(engine, buy.order_id, "canceled")
    assert (row.filled_quantity, row.reserved_amount, row.reject_reason) == (5, 0, "ioc")
    assert tuple(await account(engine, buyer)) == (dec("97900.00"), dec("0.00"))
    assert await events(redis, buy.order_id) == ["new", "partial_fill", "canceled"]
    assert (await reports(redis, buy.order_id))[-1].reason == "ioc"
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_fok_that_cannot_fill_is_canceled_without_trading(
    engine: AsyncEngine, redis: Redis
) -> None:
    seller = await trader(engine, MSFT=100)
    buyer = await trader(engine, cash=100_000)
    sell = await submit(
        engine,
        redis,
        lambda c: place_order(c, seller.account_id, "MSFT", "sell", 5, limit_price="420.00"),
    )
    await wait_order(engine, sell.order_id, "new")
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(
            c, buyer.account_id, "MSFT", "buy", 6, limit_price="420.00", time_in_force="fok"
        ),
    )
    row = await wait_order(engine, buy.order_id, "canceled")
    assert (row.filled_quantity, row.reject_reason) == (0, "fok")
    assert await trades(engine) == []
    assert (await order(engine, sell.order_id)).status == "new"
    assert tuple(await account(engine, buyer)) == (dec("100000.00"), dec("0.00"))
    assert await events(redis, buy.order_id) == ["canceled"]
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_market_buy_walks_the_book_up_to_the_collar(
    engine: AsyncEngine, redis: Redis
) -> None:
    # AAPL reference 190.00, collar 5 % → market buys trade up to 199.50.
    seller = await trader(engine, AAPL=100)
    buyer = await trader(engine, cash=100_000)
    for price in ("190.00", "195.00", "199.50", "199.51"):
        sent = await submit(
            engine,
            redis,
            lambda c, p=price: place_order(c, seller.account_id, "AAPL", "sell", 10, limit_price=p),
        )
        await wait_order(engine, sent.order_id, "new")
    buy = await submit(engine, redis, lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 50))
    row = await wait_order(engine, buy.order_id, "canceled")
    assert row.reservation_price == dec("199.50")
    assert (row.filled_quantity, row.reject_reason, row.reserved_amount) == (30, "collar", 0)
    assert [(t.price, t.quantity) for t in await trades(engine)] == [
        (dec("190"), 10),
        (dec("195"), 10),
        (dec("199.5"), 10),
    ]
    assert row.avg_fill_price == dec("194.833333")
    assert tuple(await account(engine, buyer)) == (dec("94155.00"), dec("0.00"))
    assert tuple(await position(engine, buyer, "AAPL")) == (30, 0, dec("194.833333"))
    assert await events(redis, buy.order_id) == [
        "new",
        "partial_fill",
        "partial_fill",
        "partial_fill",
        "canceled",
    ]
    md = await quote(redis, "AAPL")
    assert md is not None
    assert (md["ask"], md["last"]) == ("199.5100", "199.5000")
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_market_fok_that_cannot_fill_within_the_collar_does_not_trade(
    engine: AsyncEngine, redis: Redis
) -> None:
    # AAPL reference 190.00, collar 5 % → up to 199.50: only 5 of the 8 shares qualify.
    seller = await trader(engine, AAPL=100)
    buyer = await trader(engine, cash=100_000)
    for price in ("190.00", "199.51"):
        sent = await submit(
            engine,
            redis,
            lambda c, p=price: place_order(c, seller.account_id, "AAPL", "sell", 5, limit_price=p),
        )
        await wait_order(engine, sent.order_id, "new")
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "AAPL", "buy", 8, time_in_force="fok"),
    )
    row = await wait_order(engine, buy.order_id, "canceled")
    assert (row.filled_quantity, row.reject_reason, row.reserved_amount) == (0, "fok", 0)
    assert await trades(engine) == []
    assert tuple(await account(engine, buyer)) == (dec("100000.00"), dec("0.00"))
    assert tuple(await position(engine, seller, "AAPL"))[:2] == (100, 10)
    assert await events(redis, buy.order_id) == ["canceled"]
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_market_sell_without_liquidity_is_canceled(engine: AsyncEngine, redis: Redis) -> None:
    seller = await trader(engine, TSLA=10)
    sell = await submit(
        engine, redis, lambda c: place_order(c, seller.account_id, "TSLA", "sell", 10)
    )
    row = await wait_order(engine, sell.order_id, "canceled")
    assert (row.reject_reason, row.reserved_quantity) == ("no_liquidity", 0)
    assert tuple(await position(engine, seller, "TSLA"))[:2] == (10, 0)
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_self_trade_is_prevented(engine: AsyncEngine, redis: Redis) -> None:
    both = await trader(engine, cash=100_000, AAPL=100)
    other = await trader(engine, AAPL=100)
    own = await submit(
        engine,
        redis,
        lambda c: place_order(c, both.account_id, "AAPL", "sell", 10, limit_price="190.00"),
    )
    await wait_order(engine, own.order_id, "new")
    behind = await submit(
        engine,
        redis,
        lambda c: place_order(c, other.account_id, "AAPL", "sell", 10, limit_price="190.00"),
    )
    await wait_order(engine, behind.order_id, "new")
    buy = await submit(
        engine,
        redis,
        lambda c: place_order(c, both.account_id, "AAPL", "buy", 10, limit_price="190.00"),
    )
    row = await wait_order(engine, buy.order_id, "canceled")
    # The account's own sell is first in line: the buy stops there, trading nothing.
    assert (row.filled_quantity, row.reject_reason) == (0, "self_trade")
    assert await trades(engine) == []
    assert (await order(engine, own.order_id)).status == "new"
    assert (await order(engine, behind.order_id)).status == "new"
    assert (await reports(redis, buy.order_id))[-1].reason == "self_trade"
    assert tuple(await account(engine, both)) == (dec("100000.00"), dec("0.00"))
    await assert_invariants(engine)


@pytest.mark.usefixtures("matching")
async def test_sell_of_a_position_bought_on_the_platform(engine: AsyncEngine, redis: Redis) -> None:
    """A position built by two buys has a weighted avg_cost; selling keeps it."""
    maker = await trader(engine, cash=100_000, NVDA=100)
    buyer = await trader(engine, cash=10_000)
    for price, qty in (("120.00", 10), ("121.00", 30)):
        sell = await submit(
            engine,
            redis,
            lambda c, p=price, q=qty: place_order(
                c, maker.account_id, "NVDA", "sell", q, limit_price=p
            ),
        )
        await wait_order(engine, sell.order_id, "new")
        buy = await submit(
            engine,
            redis,
            lambda c, p=price, q=qty: place_order(
                c, buyer.account_id, "NVDA", "buy", q, limit_price=p
            ),
        )
        await wait_order(engine, buy.order_id, "filled")
    assert tuple(await position(engine, buyer, "NVDA")) == (40, 0, dec("120.75"))
    bid = await submit(
        engine,
        redis,
        lambda c: place_order(c, maker.account_id, "NVDA", "buy", 15, limit_price="122.00"),
    )
    await wait_order(engine, bid.order_id, "new")
    sell = await submit(
        engine,
        redis,
        lambda c: place_order(c, buyer.account_id, "NVDA", "sell", 15, limit_price="122.00"),
    )
    await wait_order(engine, sell.order_id, "filled")
    assert tuple(await position(engine, buyer, "NVDA")) == (25, 0, dec("120.75"))
    assert (await account(engine, buyer)).cash == Decimal("10000.00") - 1200 - 3630 + 1830
    await assert_invariants(engine)
