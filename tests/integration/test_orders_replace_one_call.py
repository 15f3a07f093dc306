"""The replace path: read and check, then one call of `intake_replace_order`.

The call locks the order and writes only if the order is still what was checked;
otherwise the request is checked again on a fresh read. These tests move the order
between the check and the write (as a fill or another replace would) and race requests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.intake import Amendment, TradingRules
from brokerx_core.intake.errors import InsufficientPosition, VersionConflict
from brokerx_core.intake.replaces import REPLACE_SQL, replace_order_on
from tests.support.outages import terminate_backends
from tests.support.trading import (
    Trader,
    account_state,
    count_rows,
    create_trader,
    place,
    position_state,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00", shares={"MSFT": 500})


class MovesBeforeFirstWrite:
    """An asyncpg connection whose first `intake_replace_order` call is preceded by
    `move()`, run on another connection: the order changes after it was checked."""

    def __init__(self, conn: Any, move: Callable[[], Awaitable[None]]) -> None:
        self._conn = conn
        self._move = move
        self.writes = 0

    async def fetchrow(self, query: str, *args: Any) -> Any:
        if query == REPLACE_SQL:
            self.writes += 1
            if self.writes == 1:
                await self._move()
        return await self._conn.fetchrow(query, *args)


async def _replace(
    engine: AsyncEngine,
    api_app: Any,
    trader: Trader,
    order_id: str,
    amendment: Amendment,
    move: Callable[[], Awaitable[None]],
) -> tuple[Any, MovesBeforeFirstWrite]:
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        conn = MovesBeforeFirstWrite(raw.driver_connection, move)
        amended = await replace_order_on(
            conn,
            account_id=trader.account_id,
            order_id=uuid.UUID(order_id),
            expected_version=1,
            amendment=amendment,
            rules=TradingRules.from_settings(api_app.state.settings),
        )
    return amended, conn


async def test_an_order_replaced_meanwhile_is_a_version_conflict_and_writes_nothing(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, trader: Trader
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")

    async def engine_applied_a_replace() -> None:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE client_order SET version = 2 WHERE id = :id"), {"id": placed["id"]}
            )

    with pytest.raises(VersionConflict):
        await _replace(
            engine, api_app, trader, placed["id"], Amendment(quantity=12), engine_applied_a_replace
        )

    assert await count_rows(engine, "outbox") == 1  # the new order's only
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")


async def test_a_fill_meanwhile_is_taken_into_account(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, trader: Trader
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")

    async def four_filled() -> None:
        # What the engine's batch does to the buyer's order and account for a fill of 4
        # at 190 (trade and ledger rows left out: only the reservation matters here).
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE client_order SET filled_quantity = 4, status = 'partially_filled',"
                    " reserved_amount = reserved_amount - 760 WHERE id = :id"
                ),
                {"id": placed["id"]},
            )
            await conn.execute(
                text(
                    "UPDATE account SET reserved_cash = reserved_cash - 760,"
                    " cash = cash - 760 WHERE id = :id"
                ),
                {"id": trader.account_id},
            )

    amended, conn = await _replace(
        engine, api_app, trader, placed["id"], Amendment(limit_price=Decimal("195.00")), four_filled
    )

    # Checked again on the fresh read: 6 left at 195 = 1170 (the stale read would have
    # reserved for 10: 1950).
    assert conn.writes == 2
    assert amended.order.reserved_amount == Decimal("1170.00")
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1170.00")
    assert await count_rows(engine, "outbox") == 2


async def test_a_sell_replace_beyond_the_position_is_refused_and_writes_nothing(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, trader: Trader
) -> None:
    placed = await place(api, trader, symbol="MSFT", side="sell", quantity=100, price="420.00")

    async def nothing() -> None:
        return None

    with pytest.raises(InsufficientPosition) as refused:
        await _replace(engine, api_app, trader, placed["id"], Amendment(quantity=600), nothing)

    assert refused.value.extra == {"required": 500, "available": 400}
    assert await position_state(engine, trader.account_id, "MSFT") == (500, 100)
    assert await count_rows(engine, "outbox") == 1


async def test_concurrent_replaces_over_http_top_up_once(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")
    headers = {**trader.headers, "If-Match": "1"}

    answers = await asyncio.gather(
        *(
            api.patch(f"/api/v1/orders/{placed['id']}", json={"quantity": 12}, headers=headers)
            for _ in range(4)
        )
    )

    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    # 12 × 190 whatever the interleaving: later requests reserved only what was missing.
    assert (await account_state(engine, trader.account_id))[1] == Decimal("2280.00")
    order = (await api.get(f"/api/v1/orders/{placed['id']}", headers=trader.headers)).json()
    assert order["reserved_amount"] == "2280.00"
    assert [c.type for _, c in await stream_commands(redis)].count("replace") == 4


async def test_replace_connections_dropped_by_postgres_cost_at_most_a_503_each(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, trader: Trader
) -> None:
    """PATCH goes through the intake batcher's own connections: after a PostgreSQL
    restart each dead connection fails one flush (503, nothing written) and is replaced;
    never a 500."""
    placed = await place(api, trader, quantity=10, price="190.00")
    url, headers = f"/api/v1/orders/{placed['id']}", {**trader.headers, "If-Match": "1"}
    warm = await asyncio.gather(*(api.patch(url, json={"quantity": 10}, headers=headers)
                                  for _ in range(4)))  # fmt: skip
    assert {r.status_code for r in warm} == {202}
    killed = await terminate_backends(engine, "api-intake")
    assert killed >= 1
    outbox_before = await count_rows(engine, "outbox")

    statuses = []
    for _ in range(killed + 2):
        response = await api.patch(url, json={"quantity": 11}, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 202:
            break

    assert statuses[-1] == 202, statuses
    assert set(statuses) <= {202, 503}
    assert statuses.count(503) <= killed
    assert await count_rows(engine, "outbox") == outbox_before + 1
