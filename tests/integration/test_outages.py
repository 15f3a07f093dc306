"""A backing service that is down makes the api answer 503 (retry later), never 500."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from brokerx_core.db import create_sessionmaker
from brokerx_core.seed import seed_instruments
from tests.support.factories import create_logged_in_client
from tests.support.outages import terminate_backends


async def test_database_down_answers_503_and_changes_nothing(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    client = await create_logged_in_client(api_app, cash=Decimal("100.00"))
    real = api_app.state.sessionmaker
    dead = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    api_app.state.sessionmaker = create_sessionmaker(dead)
    try:
        response = await api.post(
            "/api/v1/deposits", json={"amount": "10.00"}, headers=client.headers
        )
    finally:
        api_app.state.sessionmaker = real
        await dead.dispose()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"
    account = await api.get("/api/v1/account", headers=client.headers)
    assert account.json()["cash"] == "100.00"


async def test_redis_down_reads_still_answer_from_postgres(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    """The session check falls back to PostgreSQL: a Redis outage does not lock clients out."""
    client = await create_logged_in_client(api_app, cash=Decimal("25.00"))
    real = api_app.state.redis
    api_app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await api.get("/api/v1/account", headers=client.headers)
    finally:
        await api_app.state.redis.aclose()
        api_app.state.redis = real
    assert response.status_code == 200
    assert response.json()["cash"] == "25.00"


async def test_redis_down_login_answers_503(api_app: Any, api: httpx.AsyncClient) -> None:
    """Login throttles live in Redis: without them the api refuses rather than guess."""
    client = await create_logged_in_client(api_app)
    real = api_app.state.redis
    api_app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await api.post(
            "/api/v1/auth/login",
            json={"email": client.client.email, "password": client.client.password},
        )
    finally:
        await api_app.state.redis.aclose()
        api_app.state.redis = real
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


@pytest.mark.usefixtures("instruments")
async def test_a_nul_character_in_an_order_fails_only_that_order(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    client = await create_logged_in_client(api_app, cash=Decimal("10000.00"))
    body = {"side": "buy", "type": "limit", "quantity": 1, "limit_price": "190.00"}
    responses = await asyncio.gather(
        api.post("/api/v1/orders", json={**body, "symbol": "AA\x00PL"}, headers=client.headers),
        api.post("/api/v1/orders", json={**body, "symbol": "AAPL"}, headers=client.headers),
    )
    assert [r.status_code for r in responses] == [422, 201]
    assert responses[0].json()["code"] == "unknown_symbol"


async def test_a_nul_character_in_input_is_a_422_not_a_500(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    """PostgreSQL refuses NUL in text; such input is the client's error (found by fuzzing)."""
    client = await create_logged_in_client(api_app)
    response = await api.delete("/api/v1/orders", params={"symbol": "\x00"}, headers=client.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_connections_dropped_by_postgres_are_replaced_without_a_500(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """No pre-ping: a dead pooled connection costs at most a 503, then the pool reconnects
    (what a PostgreSQL restart does to every connection at once)."""
    client = await create_logged_in_client(api_app, cash=Decimal("10.00"))
    warm = await asyncio.gather(
        *[api.get("/api/v1/ledger", headers=client.headers) for _ in range(8)]
    )
    assert {r.status_code for r in warm} == {200}
    killed = await terminate_backends(engine, "api")
    assert killed >= 1

    statuses = [(await api.get("/api/v1/ledger", headers=client.headers)).status_code]
    while statuses[-1] != 200 and len(statuses) < 5:
        statuses.append((await api.get("/api/v1/ledger", headers=client.headers)).status_code)
    assert statuses[-1] == 200
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) <= 1


async def test_intake_connections_dropped_by_postgres_cost_at_most_a_503_each(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """The batcher's own connections (POST /orders) after a PostgreSQL restart: each
    failed batch answers 503 and its connection is replaced; never a 500."""
    async with engine.begin() as conn:
        await seed_instruments(conn)
    client = await create_logged_in_client(api_app, cash=Decimal("100000.00"))
    order = {"symbol": "AAPL", "side": "buy", "type": "limit", "quantity": 1}
    warm = await asyncio.gather(
        *[
            api.post("/api/v1/orders", json={**order, "limit_price": "190.00"},
                     headers=client.headers)
            for _ in range(8)
        ]
    )  # fmt: skip
    assert {r.status_code for r in warm} == {201}
    killed = await terminate_backends(engine, "api-intake")
    assert killed >= 1

    statuses: list[int] = []
    for _ in range(killed + 3):
        response = await api.post(
            "/api/v1/orders", json={**order, "limit_price": "190.00"}, headers=client.headers
        )
        statuses.append(response.status_code)
        if response.status_code == 201:
            break
    assert statuses[-1] == 201, statuses
    assert set(statuses) <= {201, 503}
