"""`/me`: the authenticated client's profile and e-mail confirmation preference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import API, FakeClock, active_client, bearer, logged_in, running_api
from tests.support.servers import ServerUrls


@pytest.fixture
async def api(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(servers, database_url, FakeClock()) as (_, client):
        yield client


@pytest.fixture
async def headers(api: httpx.AsyncClient, engine: AsyncEngine) -> dict[str, str]:
    await active_client(api, engine, "mia@example.com")
    return bearer((await logged_in(api, "mia@example.com"))["access_token"])


async def test_me_reports_the_profile_without_secrets(
    api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api.get(f"{API}/me", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "id",
        "email",
        "first_name",
        "last_name",
        "status",
        "mfa",
        "email_confirmations",
        "created_at",
    }
    assert body["email"] == "mia@example.com"
    assert body["mfa"] == "none"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


async def test_patch_me_switches_email_confirmations_off_and_on(
    api: httpx.AsyncClient, engine: AsyncEngine, headers: dict[str, str]
) -> None:
    off = await api.patch(f"{API}/me", json={"email_confirmations": False}, headers=headers)
    assert off.status_code == 200
    assert off.json()["email_confirmations"] is False
    assert (await api.get(f"{API}/me", headers=headers)).json()["email_confirmations"] is False
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT email_confirmations FROM client"))).scalar_one()
    assert stored is False

    on = await api.patch(f"{API}/me", json={"email_confirmations": True}, headers=headers)
    assert on.json()["email_confirmations"] is True
    unchanged = await api.patch(f"{API}/me", json={}, headers=headers)
    assert unchanged.status_code == 200
    assert unchanged.json()["email_confirmations"] is True


@pytest.mark.parametrize("value", ["no", 0, None, [], "false"])
async def test_patch_me_refuses_non_booleans(
    api: httpx.AsyncClient, headers: dict[str, str], value: object
) -> None:
    response = await api.patch(f"{API}/me", json={"email_confirmations": value}, headers=headers)
    if value is None:
        # null means "leave unchanged"
        assert response.status_code == 200
        assert response.json()["email_confirmations"] is True
        return
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_patch_me_needs_a_token(api: httpx.AsyncClient) -> None:
    response = await api.patch(f"{API}/me", json={"email_confirmations": False})
    assert response.status_code == 401
