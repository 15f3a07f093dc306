"""PATCH /orders/{id}: a replace is checked against the persisted order (If-Match,
state, pre-trade rules), tops up the reservation when the new terms need more, and goes
to the engine as a `replace` command."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.trading import (
    Trader,
    account_state,
    count_rows,
    create_trader,
    finish_order,
    place,
    position_state,
    record_fill,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00", shares={"MSFT": 500})


@pytest.fixture
async def other(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00", shares={"AAPL": 500})


async def test_replace_needs_if_match(api: httpx.AsyncClient, redis: Redis, trader: Trader) -> None:
    placed = await place(api, trader)

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}", json={"quantity": 5}, headers=trader.headers
    )

    assert response.status_code == 428
    assert response.json()["code"] == "precondition_required"
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order"]


@pytest.mark.parametrize("if_match", [b"one", "²".encode("latin-1"), b"*", b'W/"1"', b'"1'])
async def test_a_malformed_if_match_is_a_validation_error(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, if_match: bytes
) -> None:
    placed = await place(api, trader)

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}",
        json={"quantity": 5},
        headers=[*trader.headers.items(), ("If-Match", if_match)],
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert await count_rows(engine, "outbox") == 1


async def test_replace_with_a_stale_version_conflicts(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader)

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}",
        json={"limit_price": "195.00"},
        headers={**trader.headers, "If-Match": '"2"'},
    )

    assert response.status_code == 409
    assert response.json()["code"] == "version_conflict"
    assert await count_rows(engine, "outbox") == 1
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")


@pytest.mark.parametrize("if_match", ["1", '"1"'])
async def test_replace_to_a_higher_price_tops_up_the_reservation_and_sends_the_command(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader, if_match: str
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}",
        json={"limit_price": 195, "quantity": 12},
        headers={**trader.headers, "If-Match": if_match, "X-Correlation-ID": "amend-1"},
    )

    assert response.status_code == 202, response.text
    order = response.json()
    # The engine applies the new terms; the api only reserves what they need: 12 × 195.
    assert order["id"] == placed["id"]
    assert order["version"] == 1
    assert order["limit_price"] == "190.00"
    assert order["reserved_amount"] == "2340.00"
    assert (await account_state(engine, trader.account_id))[1] == Decimal("2340.00")
    [_, (_, command)] = await stream_commands(redis)
    assert command.type == "replace"
    assert command.order_id == uuid.UUID(placed["id"])
    assert command.version == 1
    assert command.new_quantity == 12
    assert command.new_limit_price == Decimal("195")
    assert command.new_time_in_force == "day"
    assert command.correlation_id == "amend-1"
    assert command.outbox_id is not None


async def test_replace_to_a_lower_price_leaves_the_reservation_to_the_engine(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}",
        json={"limit_price": "185.00", "time_in_force": "gtc"},
        headers={**trader.headers, "If-Match": "1"},
    )

    assert response.status_code == 202
    assert response.json()["reserved_amount"] == "1900.00"
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")
    [_, (_, command)] = await stream_commands(redis)
    assert (command.new_quantity, command.new_limit_price) == (10, Decimal("185.00"))
    assert command.new_time_in_force == "gtc"


async def test_replace_of_a_sell_tops_up_the_shares(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    placed = await place(api, trader, symbol="MSFT", side="sell", quantity=100, price="420.00")

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}",
        json={"quantity": 300},
        headers={**trader.headers, "If-Match": "1"},
    )

    assert response.status_code == 202
    assert await position_state(engine, trader.account_id, "MSFT") == (500, 300)


async def test_replace_keeps_what_is_already_filled(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, other: Trader
) -> None:
    bought = await place(api, trader, quantity=10, price="190.00")
    sold = await place(api, other, side="sell", quantity=10, price="190.00")
    await record_fill(engine, bought, sold, "190.00", 4)
    headers = {**trader.headers, "If-Match": "1"}

    too_small = await api.patch(
        f"/api/v1/orders/{bought['id']}", json={"quantity": 4}, headers=headers
    )
    ok = await api.patch(f"/api/v1/orders/{bought['id']}", json={"quantity": 5}, headers=headers)

    assert too_small.status_code == 422
    assert too_small.json()["code"] == "invalid_quantity"
    assert ok.status_code == 202


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"limit_price": "190.001"}, "invalid_tick"),
        ({"limit_price": "300.00"}, "price_out_of_band"),
        ({"limit_price": "abc"}, "invalid_price"),
        ({"quantity": 0}, "invalid_quantity"),
        ({"quantity": 600}, "insufficient_funds"),
        ({"time_in_force": "ioc"}, "validation_error"),
        ({}, "validation_error"),
    ],
)
async def test_replace_refusals_change_nothing(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    trader: Trader,
    body: dict[str, Any],
    code: str,
) -> None:
    placed = await place(api, trader, quantity=10, price="190.00")

    response = await api.patch(
        f"/api/v1/orders/{placed['id']}", json=body, headers={**trader.headers, "If-Match": "1"}
    )

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert await count_rows(engine, "outbox") == 1
    assert len(await stream_commands(redis)) == 1
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")


async def test_market_and_terminal_orders_are_not_modifiable(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    market = await place(api, trader, price=None)
    done = await place(api, trader)
    await finish_order(engine, uuid.UUID(done["id"]), "expired")
    headers = {**trader.headers, "If-Match": "1"}

    for order in (market, done):
        response = await api.patch(
            f"/api/v1/orders/{order['id']}", json={"quantity": 1}, headers=headers
        )
        assert response.status_code == 422
        assert response.json()["code"] == "order_not_modifiable"
