"""Login: credentials, account status, lockout after wrong passwords, throttling, rehash."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.argon2_calls import count_argon2_verifications
from tests.support.auth import (
    API,
    PASSWORD,
    FakeClock,
    active_client,
    audit_actions,
    bearer,
    count_rows,
    logged_in,
    login,
    running_api,
    set_status,
    sign_up,
)
from tests.support.servers import ServerUrls


async def failed_login_count(engine: AsyncEngine, email: str) -> int:
    async with engine.connect() as conn:
        query = text("SELECT failed_login_count FROM client WHERE email = :e")
        return int((await conn.execute(query, {"e": email})).scalar_one())


async def test_login_answers_tokens_that_open_me(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await active_client(api, engine, "alice@example.com")
    response = await login(api, "ALICE@example.com ")
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    me = await api.get(f"{API}/me", headers=bearer(tokens["access_token"]))
    assert me.json()["id"] == created["id"]
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT token_hash FROM refresh_token"))).scalar_one()
    assert tokens["refresh_token"] not in stored  # only its hash is kept


async def test_unknown_email_and_wrong_password_are_the_same_401(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await active_client(api, engine, "bob@example.com")
    wrong = await login(api, "bob@example.com", "Not-The-Password-1")
    unknown = await login(api, "nobody@example.com", PASSWORD)
    garbage = await login(api, "not an email", PASSWORD)
    for response in (wrong, unknown, garbage):
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
    assert wrong.json() == unknown.json() == garbage.json()
    assert wrong.json()["code"] == "invalid_credentials"
    # Both failures are audited even though the requests failed.
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT details->>'reason' FROM audit_event WHERE action = 'auth.login_failed'")
        )
        assert sorted(r[0] for r in rows) == ["unknown_email", "unknown_email", "wrong_password"]


def _argon2_parameters(password_hash: str) -> list[str]:
    """Variant, version and cost of a PHC string: ["argon2id", "v=19", "m=..,t=..,p=.."]."""
    return password_hash.split("$")[1:4]


async def test_unknown_email_costs_a_password_verification(
    api: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown e-mail runs exactly one argon2id verification, as a wrong password does,
    on a hash of the same cost: how long the answer takes does not tell which e-mails
    have an account."""
    await active_client(api, engine, "timing@example.com")
    argon2 = count_argon2_verifications(monkeypatch)
    for _ in range(2):  # the first unknown e-mail also makes the dummy hash
        unknown = await login(api, "ghost@example.com", PASSWORD)
        assert unknown.status_code == 401
        dummy = argon2.take()
        wrong = await login(api, "timing@example.com", "Wrong-Pass-99")
        assert wrong.status_code == 401
        real = argon2.take()
        assert [v.outcome for v in dummy] == [v.outcome for v in real] == ["mismatch"]
        assert _argon2_parameters(dummy[0].password_hash) == _argon2_parameters(
            real[0].password_hash
        )


async def test_pending_and_suspended_accounts_are_not_active_only_with_the_right_password(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await sign_up(api, "pending@example.com")
    await active_client(api, engine, "suspended@example.com")
    await set_status(engine, "suspended@example.com", "suspended")
    for email in ("pending@example.com", "suspended@example.com"):
        right = await login(api, email)
        assert right.status_code == 403
        assert right.json()["code"] == "account_not_active"
        wrong = await login(api, email, "Wrong-Pass-99")
        assert wrong.status_code == 401
        assert wrong.json()["code"] == "invalid_credentials"
    assert await count_rows(engine, "auth_session") == 0


async def test_five_wrong_passwords_lock_the_account_until_the_lock_lifts(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "carol@example.com")
    statuses = [
        (await login(api, "carol@example.com", f"Wrong-Pass-{i}")).status_code for i in range(4)
    ]
    assert statuses == [401, 401, 401, 401]
    fifth = await login(api, "carol@example.com", "Wrong-Pass-5")
    assert fifth.status_code == 423
    assert fifth.json()["code"] == "account_locked"
    assert int(fifth.headers["retry-after"]) == 900

    clock.advance(600)
    right = await login(api, "carol@example.com")
    assert right.status_code == 423, "the right password does not open a locked account"
    assert right.json()["code"] == "account_locked"
    assert int(right.headers["retry-after"]) == 300

    clock.advance(301)
    unlocked = await login(api, "carol@example.com")
    assert unlocked.status_code == 200
    actions = await audit_actions(engine, "carol@example.com")
    assert actions.count("auth.login_failed") == 5
    assert actions.count("auth.account_locked") == 1
    assert "auth.attempt_while_locked" in actions
    assert actions[-1] == "auth.login_succeeded"


async def test_a_success_resets_the_consecutive_failure_count(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await active_client(api, engine, "dave@example.com")
    for _ in range(4):
        assert (await login(api, "dave@example.com", "Wrong-Pass-1")).status_code == 401
    assert await failed_login_count(engine, "dave@example.com") == 4
    assert (await login(api, "dave@example.com")).status_code == 200
    assert await failed_login_count(engine, "dave@example.com") == 0
    for _ in range(4):
        assert (await login(api, "dave@example.com", "Wrong-Pass-1")).status_code == 401
    assert (await login(api, "dave@example.com")).status_code == 200


async def test_login_is_throttled_per_ip_and_per_account(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, clock: FakeClock
) -> None:
    async with running_api(
        servers,
        database_url,
        clock,
        rate_limit_login_ip_per_minute=6,
        rate_limit_login_account_per_minute=3,
        login_max_failures=100,
    ) as (_, api):
        await active_client(api, engine, "erin@example.com")
        per_account = [
            (await login(api, "erin@example.com", "Wrong-1a")).status_code for _ in range(4)
        ]
        assert per_account == [401, 401, 401, 429]
        limited = await login(api, "erin@example.com")
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60

        # Another account from the same IP still passes until the IP budget (6) is spent.
        assert (await login(api, "x@example.com")).status_code == 401
        assert (await login(api, "y@example.com")).status_code == 429
        # Another address is a fresh budget.
        elsewhere = await login(api, "z@example.com", headers={"X-Forwarded-For": "198.51.100.7"})
        assert elsewhere.status_code == 401

        clock.advance(60)
        assert (await login(api, "erin@example.com")).status_code == 200


async def test_default_limits_allow_120_logins_a_minute_from_one_ip(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await active_client(api, engine, "busy@example.com")
    for i in range(120):
        response = await login(api, f"user{i % 40}@example.com", PASSWORD)
        assert response.status_code == 401, (i, response.text)


async def test_login_rehashes_a_password_made_with_older_parameters(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, clock: FakeClock
) -> None:
    async with running_api(servers, database_url, clock) as (_, api):
        await active_client(api, engine, "frank@example.com")

    async def stored_hash() -> str:
        async with engine.connect() as conn:
            query = text("SELECT password_hash FROM client WHERE email = 'frank@example.com'")
            return str((await conn.execute(query)).scalar_one())

    old = await stored_hash()
    assert "m=1024,t=1,p=1" in old
    async with running_api(
        servers, database_url, clock, password_hash_memory_kib=2048, password_hash_time_cost=2
    ) as (_, api):
        await logged_in(api, "frank@example.com")
        new = await stored_hash()
        assert new.startswith("$argon2id$")
        assert "m=2048,t=2,p=1" in new
        # The upgraded hash still verifies the same password.
        await logged_in(api, "frank@example.com")


async def test_login_fails_closed_with_503_when_redis_is_down(
    app_api: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    """Without Redis there is no throttling, so there is no login either (never a 500)."""
    app, api = app_api
    await active_client(api, engine, "outage@example.com")
    real = app.state.redis
    app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await login(api, "outage@example.com")
    finally:
        await app.state.redis.aclose()
        app.state.redis = real
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert await count_rows(engine, "auth_session") == 0
