"""Accounts and orders for tests that drive intake directly (no api): `IntakeBatcher`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core import intake
from brokerx_core.intake.batcher import IntakeBatcher
from brokerx_core.intake.pretrade import NewOrder
from tests.support import orders_sql

RULES = intake.TradingRules(
    price_band_pct=Decimal("10"),
    market_collar_pct=Decimal("5"),
    max_open_orders=200,
    shards=4,
    session=intake.SessionHours(None, None),
)


async def new_account(engine: AsyncEngine, cash: str, shares: dict[str, int] | None = None) -> Any:
    """A funded account of a new active client (no session: intake only needs the account)."""
    async with engine.begin() as conn:
        funded = await orders_sql.create_trader(conn, cash=Decimal(cash), shares=shares)
    return funded.account_id


def order(
    side: str,
    quantity: int,
    price: str | None = "190.00",
    symbol: str = "AAPL",
    client_order_id: str | None = None,
) -> NewOrder:
    kind = "limit" if price is not None else "market"
    limit = Decimal(price) if price is not None else None
    return NewOrder(symbol, side, kind, quantity, limit, "day", client_order_id)


async def running_batcher(
    engine: AsyncEngine, redis: Redis, **options: Any
) -> AsyncIterator[IntakeBatcher]:
    """A started batcher on its own connections to the test database (fixture body)."""
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url)

    batcher = IntakeBatcher(connect, redis, lambda: RULES, **options)
    await batcher.start()
    yield batcher
    await batcher.stop()
