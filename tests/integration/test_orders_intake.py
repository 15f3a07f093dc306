"""POST /orders accepted: intake reserves cash or shares, writes the order `pending_new`
and its outbox row, and XADDs the command after the commit (the engine is not running).
Refusals are in test_orders_refusals.py, client_order_id in test_orders_idempotency.py."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.streams import order_stream_for
from tests.support.trading import (
    Trader,
    account_state,
    count_rows,
    create_trader,
    outbox_rows,
    position_state,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")

ORDER_FIELDS = {
    "id",
    "client_order_id",
    "symbol",
    "side",
    "type",
    "quantity",
    "limit_price",
    "time_in_force",
    "status",
    "filled_quantity",
    "leaves_quantity",
    "avg_fill_price",
    "reserved_amount",
    "version",
    "reject_reason",
    "created_at",
    "updated_at",
}


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


async def test_buy_limit_is_accepted_pending_new_with_cash_reserved_and_command_sent(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    response = await api.post(
        "/api/v1/orders",
        json=buy(10, "190.25", time_in_force="gtc"),
        headers={**trader.headers, "X-Correlation-ID": "corr-123"},
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert set(order) >= ORDER_FIELDS
    assert order["status"] == "pending_new"
    assert order["symbol"] == "AAPL"
    assert order["side"] == "buy"
    assert order["type"] == "limit"
    assert order["quantity"] == 10
    assert isinstance(order["quantity"], int)
    assert order["limit_price"] == "190.25"
    assert order["time_in_force"] == "gtc"
    assert order["filled_quantity"] == 0
    assert order["leaves_quantity"] == 10
    assert order["avg_fill_price"] is None
    assert order["reject_reason"] is None
    assert order["reserved_amount"] == "1902.50"
    assert order["version"] == 1
    assert order["created_at"].endswith("Z")
    assert await account_state(engine, trader.account_id) == (
        Decimal("100000.00"),
        Decimal("1902.50"),
    )

    [row] = await outbox_rows(engine)
    stream = order_stream_for("AAPL", 4)
    assert row.stream == stream
    assert "outbox_id" not in json.loads(row.payload)
    [(published_on, command)] = await stream_commands(redis)
    assert published_on == stream
    assert command.type == "new_order"
    assert command.order_id == uuid.UUID(order["id"])
    assert command.symbol == "AAPL"
    assert command.version == 1
    assert command.outbox_id == row.id
    assert command.correlation_id == "corr-123"
    async with engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT correlation_id FROM client_order WHERE id = :id"), {"id": order["id"]}
        )
    assert stored == "corr-123"


async def test_sell_limit_reserves_shares_not_cash(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    response = await api.post(
        "/api/v1/orders",
        json={
            "symbol": "MSFT",
            "side": "sell",
            "type": "limit",
            "quantity": 200,
            "limit_price": 421,
        },
        headers=trader.headers,
    )

    assert response.status_code == 201, response.text
    assert response.json()["reserved_amount"] == "0.00"
    assert response.json()["limit_price"] == "421.00"
    assert await position_state(engine, trader.account_id, "MSFT") == (500, 200)
    assert await account_state(engine, trader.account_id) == (Decimal("100000.00"), Decimal(0))
    [(_, command)] = await stream_commands(redis)
    assert command.symbol == "MSFT"
    assert command.type == "new_order"


async def test_market_buy_reserves_at_the_collar(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    response = await api.post(
        "/api/v1/orders",
        json={"symbol": "AAPL", "side": "buy", "type": "market", "quantity": 10},
        headers=trader.headers,
    )

    assert response.status_code == 201, response.text
    # Reference 190.00 + 5 % collar = 199.50 a share.
    assert response.json()["reserved_amount"] == "1995.00"
    assert response.json()["limit_price"] is None
    assert response.json()["time_in_force"] == "day"
    async with engine.connect() as conn:
        collar = await conn.scalar(
            text("SELECT reservation_price FROM client_order WHERE id = :id"),
            {"id": response.json()["id"]},
        )
    assert collar == Decimal("199.50")
    assert (await account_state(engine, trader.account_id))[1] == Decimal("1995.00")


async def test_band_uses_the_last_trade_price_when_there_is_one(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE instrument SET last_price = 100 WHERE symbol = 'AAPL'"))

    inside = await api.post("/api/v1/orders", json=buy(1, "109.00"), headers=trader.headers)
    outside = await api.post("/api/v1/orders", json=buy(1, "171.00"), headers=trader.headers)

    assert inside.status_code == 201, inside.text
    assert outside.json()["code"] == "price_out_of_band"


async def test_json_number_prices_are_exact_decimals_never_floats(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    headers = {**trader.headers, "Content-Type": "application/json"}
    body = '{"symbol":"AAPL","side":"buy","type":"limit","quantity":3,"limit_price":%s}'

    # As a float this is 190.1 (on the tick); as the decimal it is, it is not.
    off_tick = await api.post(
        "/api/v1/orders", content=body % "190.1000000000000000001", headers=headers
    )
    exact = await api.post("/api/v1/orders", content=body % "190.10", headers=headers)

    assert off_tick.status_code == 422
    assert off_tick.json()["code"] == "invalid_tick"
    assert exact.status_code == 201, exact.text
    assert exact.json()["limit_price"] == "190.10"
    assert exact.json()["reserved_amount"] == "570.30"


async def test_orders_need_a_bearer_token(api: httpx.AsyncClient, engine: AsyncEngine) -> None:
    response = await api.post("/api/v1/orders", json=buy())

    assert response.status_code == 401
    assert await count_rows(engine, "client_order") == 0


async def test_a_lost_publish_is_not_the_client_s_problem(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    """Redis refusing the XADD after the commit: 201 anyway, the outbox row waits for the
    relay."""
    real = api_app.state.redis
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)

    class SessionCacheOnly:
        """Real Redis for the session cache; the dead one for stream writes."""

        def __getattr__(self, name: str) -> Any:
            return getattr(dead if name in ("xadd", "pipeline") else real, name)

    api_app.state.redis = SessionCacheOnly()
    try:
        response = await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)
    finally:
        api_app.state.redis = real
        await dead.aclose()

    assert response.status_code == 201, response.text
    [row] = await outbox_rows(engine)
    assert json.loads(row.payload)["order_id"] == response.json()["id"]


async def test_intake_metrics(api: httpx.AsyncClient, trader: Trader) -> None:
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    received = sample("brokerx_orders_received_total", {"side": "buy", "type": "limit"})
    acks = sample("brokerx_order_ack_seconds_count")

    await api.post("/api/v1/orders", json=buy(1), headers=trader.headers)
    await api.post("/api/v1/orders", json=buy(1, "999.00"), headers=trader.headers)

    assert sample("brokerx_orders_received_total", {"side": "buy", "type": "limit"}) == received + 2
    assert sample("brokerx_order_ack_seconds_count") == acks + 1
    metrics = (await api.get("/metrics")).text
    assert "brokerx_orders_rejected_total" in metrics
    assert "brokerx_order_ack_seconds_bucket" in metrics
