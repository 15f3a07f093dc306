"""Access and refresh tokens: rotation, reuse detection, logout, and forged tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.settings import DEV_JWT_SECRET
from tests.support.auth import (
    API,
    FakeClock,
    active_client,
    audit_actions,
    bearer,
    logged_in,
    running_api,
)
from tests.support.servers import ServerUrls


@pytest.fixture
async def tokens(api: httpx.AsyncClient, engine: AsyncEngine) -> dict[str, Any]:
    await active_client(api, engine, "tess@example.com")
    return await logged_in(api, "tess@example.com")


async def me_status(api: httpx.AsyncClient, access_token: str) -> int:
    return (await api.get(f"{API}/me", headers=bearer(access_token))).status_code


async def refresh(api: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await api.post(f"{API}/auth/refresh", json={"refresh_token": refresh_token})


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_refresh_rotates_the_pair_and_spends_the_old_token(
    api: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    first = await refresh(api, tokens["refresh_token"])
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["token_type"] == "bearer"
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert await me_status(api, rotated["access_token"]) == 200
    # Same session, new token.
    assert claims_of(rotated["access_token"])["sid"] == claims_of(tokens["access_token"])["sid"]
    second = await refresh(api, rotated["refresh_token"])
    assert second.status_code == 200


async def test_reusing_a_spent_refresh_token_revokes_the_whole_session(
    api: httpx.AsyncClient, engine: AsyncEngine, tokens: dict[str, Any]
) -> None:
    rotated = (await refresh(api, tokens["refresh_token"])).json()
    newest = (await refresh(api, rotated["refresh_token"])).json()
    assert await me_status(api, newest["access_token"]) == 200

    replay = await refresh(api, tokens["refresh_token"])
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_token"
    # Every token of the session is dead now, including the newest ones.
    assert (await refresh(api, newest["refresh_token"])).status_code == 401
    assert await me_status(api, newest["access_token"]) == 401
    assert await me_status(api, rotated["access_token"]) == 401
    async with engine.connect() as conn:
        reason = (await conn.execute(text("SELECT revoked_reason FROM auth_session"))).scalar_one()
    assert reason == "refresh_reuse"
    assert "auth.refresh_token_reused" in await audit_actions(engine, "tess@example.com")


async def test_other_sessions_survive_a_reuse_in_one_session(
    api: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    other = await logged_in(api, "tess@example.com")
    await refresh(api, tokens["refresh_token"])
    await refresh(api, tokens["refresh_token"])
    assert await me_status(api, other["access_token"]) == 200
    assert (await refresh(api, other["refresh_token"])).status_code == 200


@pytest.mark.parametrize("bad", ["", "x" * 5000, "not-a-token", 12345, None])
async def test_garbage_refresh_tokens_are_invalid(
    api: httpx.AsyncClient, tokens: dict[str, Any], bad: object
) -> None:
    response = await api.post(f"{API}/auth/refresh", json={"refresh_token": bad})
    assert response.status_code in (401, 422)
    expected = "invalid_token" if isinstance(bad, str) and 0 < len(bad) <= 4096 else None
    if expected:
        assert response.json()["code"] == expected
    # The real session is untouched.
    assert await me_status(api, tokens["access_token"]) == 200


async def test_an_expired_refresh_token_is_invalid(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, clock: FakeClock
) -> None:
    async with running_api(servers, database_url, clock, refresh_token_ttl_seconds=3600) as (
        _,
        api,
    ):
        await active_client(api, engine, "old@example.com")
        issued = await logged_in(api, "old@example.com")
        clock.advance(3601)
        response = await refresh(api, issued["refresh_token"])
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"


async def test_logout_kills_the_access_token_at_once_and_the_refresh_token(
    api: httpx.AsyncClient, engine: AsyncEngine, tokens: dict[str, Any]
) -> None:
    # Warm the session cache, so revocation must overwrite it.
    assert await me_status(api, tokens["access_token"]) == 200
    response = await api.post(f"{API}/auth/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 204
    assert response.content == b""
    assert await me_status(api, tokens["access_token"]) == 401
    assert (await refresh(api, tokens["refresh_token"])).status_code == 401
    again = await api.post(f"{API}/auth/logout", headers=bearer(tokens["access_token"]))
    assert again.status_code == 401
    assert "auth.logout" in await audit_actions(engine, "tess@example.com")


async def test_logout_holds_even_when_redis_forgets_the_revocation(
    api: httpx.AsyncClient, redis: Redis, tokens: dict[str, Any]
) -> None:
    await api.post(f"{API}/auth/logout", headers=bearer(tokens["access_token"]))
    await redis.flushdb()  # PostgreSQL is the truth
    assert await me_status(api, tokens["access_token"]) == 401


@pytest.mark.parametrize(
    "path", ["/me", "/auth/logout", "/auth/mfa/totp/setup", "/auth/mfa/email/enable"]
)
async def test_authenticated_endpoints_answer_401_without_a_token(
    api: httpx.AsyncClient, path: str
) -> None:
    method = api.get if path == "/me" else api.post
    response = await method(f"{API}{path}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"].startswith("application/problem+json")
    malformed = await method(f"{API}{path}", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert malformed.status_code == 401


def forge(claims: dict[str, Any], **changes: Any) -> dict[str, Any]:
    forged = dict(claims)
    forged.update(changes)
    return forged


async def test_forged_and_misused_tokens_all_answer_401(
    api: httpx.AsyncClient, tokens: dict[str, Any], clock: FakeClock
) -> None:
    access = tokens["access_token"]
    claims = claims_of(access)
    header = jwt.get_unverified_header(access)
    assert header["alg"] == "HS256"

    attacks = {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}.",
        "wrong signature": jwt.encode(claims, "another-secret-of-32-bytes-or-more!", "HS256"),
        "wrong audience": jwt.encode(forge(claims, aud="someone-else"), DEV_JWT_SECRET, "HS256"),
        "wrong issuer": jwt.encode(forge(claims, iss="evil"), DEV_JWT_SECRET, "HS256"),
        "no session": jwt.encode(
            {k: v for k, v in claims.items() if k != "sid"}, DEV_JWT_SECRET, "HS256"
        ),
        "unknown session": jwt.encode(
            forge(claims, sid=str(uuid.uuid4())), DEV_JWT_SECRET, "HS256"
        ),
        "refresh token as access": tokens["refresh_token"],
        "tampered payload": ".".join(
            [
                access.split(".")[0],
                b64(forge(claims, exp=claims["exp"] + 10**6)),
                access.split(".")[2],
            ]
        ),
    }
    for name, token in attacks.items():
        assert await me_status(api, token) == 401, name

    # The genuine token works until it expires by the clock.
    assert await me_status(api, access) == 200
    clock.advance(901)
    assert await me_status(api, access) == 401


async def test_an_mfa_token_is_not_an_access_token(
    app_api: tuple[FastAPI, httpx.AsyncClient], tokens: dict[str, Any]
) -> None:
    app, api = app_api
    client_id = uuid.UUID(claims_of(tokens["access_token"])["sub"])
    mfa_token = app.state.token_service.issue_mfa(client_id)
    assert await me_status(api, mfa_token) == 401
    # Nor is an access token an MFA token.
    response = await api.post(
        f"{API}/auth/mfa/verify", json={"mfa_token": tokens["access_token"], "code": "123456"}
    )
    assert response.status_code == 401


async def test_the_token_clock_is_the_app_clock(tokens: dict[str, Any], clock: FakeClock) -> None:
    claims = claims_of(tokens["access_token"])
    assert claims["iat"] == int(clock())
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - time.time()) < 60
    assert {"iss", "aud", "exp", "iat", "jti", "sub", "typ", "sid"} <= set(claims)


async def test_two_concurrent_refreshes_of_one_token_never_both_succeed(
    api: httpx.AsyncClient, tokens: dict[str, Any]
) -> None:
    first, second = await asyncio.gather(
        refresh(api, tokens["refresh_token"]), refresh(api, tokens["refresh_token"])
    )
    assert sorted([first.status_code, second.status_code]) == [200, 401]
