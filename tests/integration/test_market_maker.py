"""The market maker quotes a two-sided ladder for every instrument through the intake code
(valid ticks, inside the band, reserved like any client's order) and withdraws the quotes
its moving reference leaves behind with cancel commands."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_core.invariants import find_violations
from brokerx_core.seed import INSTRUMENTS, seed_market_maker
from brokerx_worker.jobs.market_maker import MarketMaker, market_maker
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.engine import MatchingProcess, matching_settings, wait_settled
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.trading import create_trader, finish_order, stream_commands

pytestmark = pytest.mark.usefixtures("instruments")

LEVELS = 3


class NoWalk(random.Random):
    """A reference that never moves by itself (tests move it explicitly)."""

    def random(self) -> float:
        return 0.99


@pytest.fixture
async def mm_account(engine: AsyncEngine) -> uuid.UUID:
    async with engine.begin() as conn:
        return await seed_market_maker(conn)


@pytest.fixture
def settings(servers: ServerUrls, database_url: str) -> WorkerSettings:
    return WorkerSettings(
        **settings_overrides(servers, database_url),
        market_maker_enabled=True,
        market_maker_levels=LEVELS,
        market_maker_spread_pct="0.1",
    )


@pytest.fixture
def maker(
    mm_account: uuid.UUID,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    settings: WorkerSettings,
) -> MarketMaker:
    return MarketMaker(sessionmaker, redis, settings, rng=NoWalk())


async def open_quotes(engine: AsyncEngine, account_id: uuid.UUID) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT o.id, o.symbol, o.side, o.type, o.quantity, o.limit_price,"
                        " o.time_in_force, o.status, o.reserved_amount, o.reserved_quantity,"
                        " o.correlation_id, o.request_hash, i.tick_size, i.reference_price"
                        " FROM client_order o JOIN instrument i ON i.symbol = o.symbol"
                        " WHERE o.account_id = :a"
                        " AND o.status IN ('pending_new', 'new', 'partially_filled')"
                    ),
                    {"a": account_id},
                )
            ).all()
        )


async def apply_cancels(engine: AsyncEngine, redis: Redis, done: set[uuid.UUID]) -> None:
    """Play the engine for the cancel commands not yet applied."""
    for _, command in await stream_commands(redis):
        if command.type == "cancel" and command.order_id not in done:
            await finish_order(engine, command.order_id, "canceled")
            done.add(command.order_id)


async def test_one_step_quotes_a_valid_two_sided_ladder_everywhere(
    engine: AsyncEngine, redis: Redis, maker: MarketMaker, mm_account: uuid.UUID
) -> None:
    result = await maker.step()

    quotes = await open_quotes(engine, mm_account)
    assert result.placed == len(quotes) == 2 * LEVELS * len(INSTRUMENTS)
    assert result.refused == {}
    by_symbol: dict[str, list[Any]] = defaultdict(list)
    for quote in quotes:
        by_symbol[quote.symbol].append(quote)
        assert quote.type == "limit"
        assert quote.time_in_force == "gtc"
        assert quote.status == "pending_new"
        assert quote.correlation_id == "market-maker"
        assert quote.request_hash  # written by the shared intake code
        assert quote.limit_price % quote.tick_size == 0
        band = quote.reference_price * Decimal("0.10")
        assert quote.reference_price - band <= quote.limit_price <= quote.reference_price + band
        if quote.side == "buy":
            assert quote.reserved_amount == quote.quantity * quote.limit_price
            assert quote.reserved_quantity == 0
        else:
            assert quote.reserved_quantity == quote.quantity
            assert quote.reserved_amount == 0
    assert set(by_symbol) == {i.symbol for i in INSTRUMENTS}
    for symbol, ladder in by_symbol.items():
        bids = sorted((q.limit_price for q in ladder if q.side == "buy"), reverse=True)
        asks = sorted(q.limit_price for q in ladder if q.side == "sell")
        assert len(bids) == len(asks) == LEVELS, symbol
        tick = ladder[0].tick_size
        spread = asks[0] - bids[0]
        assert spread >= 2 * tick, symbol
        # 0.1 % of the price, rounded up to the tick.
        assert spread <= ladder[0].reference_price * Decimal("0.001") + tick, symbol
        assert bids[0] < ladder[0].reference_price < asks[0], symbol

    commands = [c for _, c in await stream_commands(redis)]
    assert len(commands) == len(quotes)
    assert {c.type for c in commands} == {"new_order"}
    assert {c.order_id for c in commands} == {q.id for q in quotes}
    assert await find_violations(engine) == []


async def test_an_unchanged_reference_changes_nothing(
    engine: AsyncEngine, redis: Redis, maker: MarketMaker
) -> None:
    await maker.step()
    entries = len(await stream_commands(redis))

    result = await maker.step()

    assert (result.placed, result.canceled) == (0, 0)
    assert len(await stream_commands(redis)) == entries


async def test_a_moving_reference_cancels_stale_quotes_and_fills_the_gaps(
    engine: AsyncEngine, redis: Redis, maker: MarketMaker, mm_account: uuid.UUID
) -> None:
    await maker.step()
    before = {q.id: q for q in await open_quotes(engine, mm_account) if q.symbol == "AAPL"}
    ladder = maker.ladders["AAPL"]
    ladder.mid += ladder.step  # one level up

    moved = await maker.step()

    assert (moved.placed, moved.canceled) == (2, 2)
    cancels = [c for _, c in await stream_commands(redis) if c.type == "cancel"]
    canceled = {c.order_id for c in cancels}
    assert canceled <= set(before)
    lowest_bid = min((q for q in before.values() if q.side == "buy"), key=lambda q: q.limit_price)
    lowest_ask = min((q for q in before.values() if q.side == "sell"), key=lambda q: q.limit_price)
    assert canceled == {lowest_bid.id, lowest_ask.id}
    assert all(c.outbox_id is not None and c.symbol == "AAPL" for c in cancels)

    # Until the engine applies them, the cancels are not sent again.
    again = await maker.step()
    assert (again.placed, again.canceled) == (0, 0)

    await apply_cancels(engine, redis, set())
    aapl = [q for q in await open_quotes(engine, mm_account) if q.symbol == "AAPL"]
    assert len(aapl) == 2 * LEVELS
    assert await find_violations(engine) == []


async def test_a_random_walk_keeps_one_ladder_inside_the_band(
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: WorkerSettings,
    mm_account: uuid.UUID,
) -> None:
    maker = MarketMaker(sessionmaker, redis, settings, rng=random.Random(20240611))
    done: set[uuid.UUID] = set()
    for _ in range(12):
        result = await maker.step()
        assert result.refused == {}
        await apply_cancels(engine, redis, done)
        quotes = await open_quotes(engine, mm_account)
        # Well under the limit: exactly one ladder once the engine applied the cancels.
        assert len(quotes) == 2 * LEVELS * len(INSTRUMENTS)
    assert done  # the reference did move
    assert len(quotes) < settings.max_open_orders
    assert await find_violations(engine) == []


async def test_the_reference_is_pulled_back_inside_the_band(
    engine: AsyncEngine, maker: MarketMaker, mm_account: uuid.UUID
) -> None:
    await maker.step()
    maker.ladders["AAPL"].mid += 100_000  # far above any band

    result = await maker.step()

    assert result.refused == {}
    aapl = [q for q in await open_quotes(engine, mm_account) if q.symbol == "AAPL"]
    assert all(Decimal("171.00") <= q.limit_price <= Decimal("209.00") for q in aapl)


async def test_without_the_market_maker_account_nothing_is_quoted(
    engine: AsyncEngine,
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: WorkerSettings,
) -> None:
    result = await MarketMaker(sessionmaker, redis, settings).step()

    assert result.placed == 0
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM client_order")) == 0


async def test_the_loop_does_nothing_when_disabled(
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: WorkerSettings,
    mm_account: uuid.UUID,
    engine: AsyncEngine,
) -> None:
    ctx = {
        "settings": settings.model_copy(update={"market_maker_enabled": False}),
        "sessionmaker": sessionmaker,
        "streams": redis,
    }

    await asyncio.wait_for(market_maker(ctx), timeout=5)

    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM client_order")) == 0


@pytest.mark.slow
async def test_clients_trade_against_the_ladder_in_the_real_engine(
    api: httpx.AsyncClient,
    api_app: Any,
    engine: AsyncEngine,
    redis: Redis,
    servers: ServerUrls,
    database_url: str,
    maker: MarketMaker,
    mm_account: uuid.UUID,
) -> None:
    matching = MatchingProcess(matching_settings(servers, database_url)).start()
    try:
        await matching.wait_serving(4)
        await maker.step()
        await wait_settled(engine)
        client = await create_trader(engine, api_app, cash="100000.00")

        # 150 shares: the whole best ask (100 at 190.10) and part of the next level.
        placed = await api.post(
            "/api/v1/orders",
            json={"symbol": "AAPL", "side": "buy", "type": "market", "quantity": 150},
            headers=client.headers,
        )
        assert placed.status_code == 201, placed.text

        async def order() -> dict[str, Any]:
            response = await api.get(
                f"/api/v1/orders/{placed.json()['id']}", headers=client.headers
            )
            return response.json()  # type: ignore[no-any-return]

        filled = await eventually(order, lambda o: o["status"] == "filled", timeout=5)
        assert [(f["price"], f["quantity"]) for f in filled["fills"]] == [
            ("190.10", 100),
            ("190.19", 50),
        ]
        assert filled["avg_fill_price"] == "190.13"

        # The ladder refills the level that traded and follows its reference.
        ladder = maker.ladders["AAPL"]
        ladder.mid += ladder.step
        await maker.step()
        await wait_settled(engine)
        await maker.step()
        await wait_settled(engine)
        aapl = [q for q in await open_quotes(engine, mm_account) if q.symbol == "AAPL"]
        assert len(aapl) == 2 * LEVELS
        assert all(q.status in ("new", "partially_filled") for q in aapl)
        assert await find_violations(engine, pending_grace_seconds=0) == []
    finally:
        await matching.terminate()
