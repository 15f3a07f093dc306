"""A backing service that is down makes the api answer 503 (retry later), never 500."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from brokerx_core.db import create_sessionmaker
from tests.support.factories import create_logged_in_client


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


async def test_redis_down_answers_503(api_app: Any, api: httpx.AsyncClient) -> None:
    client = await create_logged_in_client(api_app)
    real = api_app.state.redis
    api_app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await api.get("/api/v1/account", headers=client.headers)
    finally:
        await api_app.state.redis.aclose()
        api_app.state.redis = real
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


async def test_a_nul_character_in_input_is_a_422_not_a_500(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    """PostgreSQL refuses NUL in text; such input is the client's error (found by fuzzing)."""
    client = await create_logged_in_client(api_app)
    response = await api.delete("/api/v1/orders", params={"symbol": "\x00"}, headers=client.headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
