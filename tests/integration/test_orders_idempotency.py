"""`client_order_id` (and the `Idempotency-Key` header, its alias): the same id with the
same terms answers the existing order once; other terms are refused; concurrent
requests with one id place one order."""

from __future__ import annotations

import asyncio
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
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00")


def buy(quantity: int = 10, price: str = "190.00", **extra: Any) -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": quantity,
        "limit_price": price,
        **extra,
    }


async def test_client_order_id_replay_returns_the_same_order_once(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    body = buy(10, "190.00", client_order_id="my-order-1")
    first = await api.post("/api/v1/orders", json=body, headers=trader.headers)
    # The same terms written differently are the same request.
    again = await api.post(
        "/api/v1/orders",
        json={**body, "limit_price": 190, "time_in_force": "day"},
        headers=trader.headers,
    )

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["client_order_id"] == "my-order-1"
    assert await count_rows(engine, "client_order") == 1
    assert await count_rows(engine, "outbox") == 1
    assert len(await stream_commands(redis)) == 1
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")


async def test_client_order_id_with_another_body_is_refused(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    await api.post("/api/v1/orders", json=buy(10, client_order_id="dup"), headers=trader.headers)

    response = await api.post(
        "/api/v1/orders", json=buy(11, client_order_id="dup"), headers=trader.headers
    )

    assert response.status_code == 409
    assert response.json()["code"] == "client_order_id_reused"
    assert await count_rows(engine, "client_order") == 1
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")


async def test_client_order_ids_are_per_account(
    api: httpx.AsyncClient, engine: AsyncEngine, api_app: Any, trader: Trader
) -> None:
    other = await create_trader(engine, api_app, cash="10000")

    mine = await api.post(
        "/api/v1/orders", json=buy(1, client_order_id="same"), headers=trader.headers
    )
    theirs = await api.post(
        "/api/v1/orders", json=buy(2, client_order_id="same"), headers=other.headers
    )

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


async def test_idempotency_key_header_acts_as_client_order_id(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    headers = {**trader.headers, "Idempotency-Key": "key-42"}
    first = await api.post("/api/v1/orders", json=buy(5), headers=headers)
    replay = await api.post("/api/v1/orders", json=buy(5), headers=headers)
    reused = await api.post("/api/v1/orders", json=buy(6), headers=headers)
    conflicting = await api.post(
        "/api/v1/orders", json=buy(5, client_order_id="other"), headers=headers
    )

    assert first.status_code == 201
    assert first.json()["client_order_id"] == "key-42"
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    assert reused.status_code == 409
    assert reused.json()["code"] == "client_order_id_reused"
    assert conflicting.status_code == 422
    assert conflicting.json()["code"] == "validation_error"
    assert await count_rows(engine, "client_order") == 1


async def test_concurrent_requests_with_one_client_order_id_place_one_order(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    body = buy(10, client_order_id="race")

    responses = await asyncio.gather(
        *(api.post("/api/v1/orders", json=body, headers=trader.headers) for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_rows(engine, "client_order") == 1
    assert await count_rows(engine, "outbox") == 1
    assert len(await stream_commands(redis)) == 1
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1900.00")
