"""POST /orders refusals: every pre-trade error answers its code and changes nothing (no
order, no reservation, no outbox row, nothing on the stream)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.trading import (
    Trader,
    account_state,
    count_rows,
    create_trader,
    finish_order,
    position_state,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    """$100,000 and 500 MSFT."""
    return await create_trader(engine, api_app, cash="100000.00", shares={"MSFT": 500})


def buy(quantity: Any = 10, price: Any = "190.00", **extra: Any) -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": quantity,
        "limit_price": price,
        **extra,
    }


async def _nothing_written(engine: AsyncEngine, redis: Redis, trader: Trader) -> None:
    assert await count_rows(engine, "client_order") == 0
    assert await count_rows(engine, "outbox") == 0
    assert await account_state(engine, trader.account_id) == (Decimal("100000.00"), Decimal(0))
    assert await position_state(engine, trader.account_id, "MSFT") == (500, 0)
    assert await stream_commands(redis) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(
            {"symbol": "AAPL", "type": "limit", "quantity": 1, "limit_price": "190"},
            "validation_error",
            id="missing-side",
        ),
        pytest.param(buy(side="hold"), "validation_error", id="unknown-side"),
        pytest.param(buy(type="stop"), "validation_error", id="unknown-type"),
        pytest.param(buy(time_in_force="week"), "validation_error", id="unknown-tif"),
        pytest.param(buy(client_order_id="x" * 65), "validation_error", id="long-client-id"),
        pytest.param(["not", "an", "object"], "validation_error", id="array-body"),
        pytest.param({**buy(), "symbol": "ZZZZ"}, "unknown_symbol", id="unknown-symbol"),
        pytest.param(buy(0), "invalid_quantity", id="zero-quantity"),
        pytest.param(buy(-5), "invalid_quantity", id="negative-quantity"),
        pytest.param(buy(1.5), "invalid_quantity", id="fractional-quantity"),
        pytest.param(buy("10"), "invalid_quantity", id="string-quantity"),
        pytest.param(buy(1_000_001), "invalid_quantity", id="too-large-quantity"),
        pytest.param(buy(price=None), "invalid_price", id="limit-without-price"),
        pytest.param(buy(price="abc"), "invalid_price", id="non-numeric-price"),
        pytest.param(buy(price="-190"), "invalid_price", id="negative-price"),
        pytest.param(buy(price=0), "invalid_price", id="zero-price"),
        pytest.param(buy(price="NaN"), "invalid_price", id="nan-price"),
        pytest.param({**buy(), "type": "market"}, "invalid_price", id="market-with-price"),
        pytest.param(buy(price="190.005"), "invalid_tick", id="off-tick"),
        pytest.param(buy(price="209.01"), "price_out_of_band", id="above-band"),
        pytest.param(buy(price="170.99"), "price_out_of_band", id="below-band"),
        pytest.param(buy(600, "190.00"), "insufficient_funds", id="insufficient-funds"),
        pytest.param({**buy(), "side": "sell"}, "insufficient_position", id="no-position"),
        pytest.param(
            {
                "symbol": "MSFT",
                "side": "sell",
                "type": "limit",
                "quantity": 501,
                "limit_price": "420",
            },
            "insufficient_position",
            id="sell-more-than-held",
        ),
    ],
)
async def test_pre_trade_refusals_answer_their_code_and_change_nothing(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    trader: Trader,
    body: Any,
    code: str,
) -> None:
    before = REGISTRY.get_sample_value("brokerx_orders_rejected_total", {"reason": code}) or 0

    response = await api.post("/api/v1/orders", json=body, headers=trader.headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code
    assert problem["status"] == 422
    assert problem["detail"]
    assert REGISTRY.get_sample_value("brokerx_orders_rejected_total", {"reason": code}) == (
        before + 1
    )
    await _nothing_written(engine, redis, trader)


async def test_invalid_json_is_a_validation_error(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    response = await api.post(
        "/api/v1/orders",
        content=b'{"symbol": "AAPL",',
        headers={**trader.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    await _nothing_written(engine, redis, trader)


async def test_validation_error_lists_every_bad_field(
    api: httpx.AsyncClient, trader: Trader
) -> None:
    response = await api.post(
        "/api/v1/orders", json={"symbol": "AAPL", "side": "hold"}, headers=trader.headers
    )

    assert response.json()["code"] == "validation_error"
    locations = {tuple(e["loc"]) for e in response.json()["errors"]}
    assert locations == {("side",), ("type",), ("quantity",)}


async def test_out_of_band_detail_gives_the_band(api: httpx.AsyncClient, trader: Trader) -> None:
    response = await api.post("/api/v1/orders", json=buy(1, "250.00"), headers=trader.headers)

    problem = response.json()
    assert problem["code"] == "price_out_of_band"
    assert "171.00" in problem["detail"]
    assert "209.00" in problem["detail"]
    assert problem["band"] == {
        "low": "171.00",
        "high": "209.00",
        "reference": "190.00",
        "pct": "10",
    }


async def test_band_edges_are_inclusive(api: httpx.AsyncClient, trader: Trader) -> None:
    low = await api.post("/api/v1/orders", json=buy(1, "171.00"), headers=trader.headers)
    high = await api.post("/api/v1/orders", json=buy(1, "209.00"), headers=trader.headers)

    assert (low.status_code, high.status_code) == (201, 201)


async def test_buying_power_is_cash_minus_what_open_orders_hold(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    first = await api.post("/api/v1/orders", json=buy(500, "190.00"), headers=trader.headers)
    second = await api.post("/api/v1/orders", json=buy(27, "190.00"), headers=trader.headers)
    third = await api.post("/api/v1/orders", json=buy(26, "190.00"), headers=trader.headers)

    assert first.status_code == 201
    # 100,000 - 95,000 = 5,000 left: 27 × 190 = 5,130 does not fit, 26 × 190 = 4,940 does.
    assert second.json()["code"] == "insufficient_funds"
    assert "5000.00" in second.json()["detail"]
    assert third.status_code == 201
    assert (await account_state(engine, trader.account_id))[1] == Decimal("99940.00")


async def test_too_many_open_orders(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    api_app.state.settings = api_app.state.settings.model_copy(update={"max_open_orders": 2})
    for _ in range(2):
        assert (
            await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)
        ).status_code == 201

    response = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "too_many_open_orders"
    assert await count_rows(engine, "client_order") == 2
    assert (await account_state(engine, trader.account_id))[1] == Decimal("380.00")


async def test_closed_orders_do_not_count_toward_the_open_order_limit(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    api_app.state.settings = api_app.state.settings.model_copy(update={"max_open_orders": 1})
    first = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)
    await finish_order(engine, uuid.UUID(first.json()["id"]), "canceled")

    second = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)

    assert second.status_code == 201, second.text


async def test_market_closed_outside_session_hours(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    now = datetime.now(UTC)
    opens, closes = now + timedelta(hours=1), now + timedelta(hours=2)
    api_app.state.settings = api_app.state.settings.model_copy(
        update={"session_open": f"{opens:%H:%M}", "session_close": f"{closes:%H:%M}"}
    )

    response = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "market_closed"
    await _nothing_written(engine, redis, trader)


async def test_open_session_accepts_orders(
    api_app: Any, api: httpx.AsyncClient, trader: Trader
) -> None:
    now = datetime.now(UTC)
    opens, closes = now - timedelta(hours=1), now + timedelta(hours=1)
    api_app.state.settings = api_app.state.settings.model_copy(
        update={"session_open": f"{opens:%H:%M}", "session_close": f"{closes:%H:%M}"}
    )

    response = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)

    assert response.status_code == 201, response.text


async def test_halted_instrument_is_market_closed(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE instrument SET status = 'halted' WHERE symbol = 'AAPL'"))

    response = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)

    assert response.json()["code"] == "market_closed"
    assert "halted" in response.json()["detail"]
    await _nothing_written(engine, redis, trader)
