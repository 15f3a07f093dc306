"""Helpers for the onboarding/auth tests: an api with a fake clock and cheap argon2, the
real worker run in-process against the SMTP sink, and sign-up/login shortcuts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pyotp
from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.app import create_app
from brokerx_api.settings import ApiSettings
from brokerx_core.db import create_engine, create_sessionmaker
from brokerx_worker import registry
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

API = "/api/v1"
PASSWORD = "Sturdy-Falcon-42"
# argon2id at its cheapest: the tests exercise the flows, not the hash cost (the
# production defaults are asserted by tests/unit/test_passwords.py).
FAST_HASHING = {
    "password_hash_memory_kib": 1024,
    "password_hash_time_cost": 1,
    "password_hash_parallelism": 1,
}


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def running_api(
    servers: ServerUrls, database_url: str, clock: FakeClock, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The api (lifespan running) on the fake clock, and an HTTP client for it."""
    settings = ApiSettings(
        **{**settings_overrides(servers, database_url), **FAST_HASHING, **overrides}
    )
    app = create_app(settings)
    app.state.clock = clock
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield app, client


def worker_settings(
    servers: ServerUrls, database_url: str, smtp: SmtpSink, **overrides: Any
) -> WorkerSettings:
    """Worker settings pointing at the test servers and the SMTP sink (fast retries)."""
    values = {
        **settings_overrides(servers, database_url),
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "email_retry_base_seconds": 0.05,
        **overrides,
    }
    return WorkerSettings(**values)


async def run_worker(settings: WorkerSettings) -> Worker:
    """Run the real worker's jobs (registry.FUNCTIONS) until the queue is empty."""
    engine = create_engine(settings, pool_size=2)
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    worker = Worker(
        functions=registry.FUNCTIONS,
        redis_pool=pool,
        burst=True,
        handle_signals=False,
        poll_delay=0.02,
        keep_result=60,
        ctx={"settings": settings, "sessionmaker": create_sessionmaker(engine)},
    )
    try:
        await worker.async_run()
    finally:
        # Not worker.close(): it calls a Redis method deprecated in redis-py 5.
        await pool.delete(worker.health_check_key)
        await pool.aclose()
        await engine.dispose()
    return worker


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signup_body(email: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": email,
        "password": PASSWORD,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "date_of_birth": "1990-12-10",
        "address": "12 St James's Square, London",
        "phone": "+44 20 7946 0000",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def sign_up(api: httpx.AsyncClient, email: str, **overrides: Any) -> dict[str, Any]:
    response = await api.post(f"{API}/clients", json=signup_body(email, **overrides))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def set_status(engine: AsyncEngine, email: str, status: str) -> None:
    """Change a client's status directly (tests of login rules, not of verification)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE client SET status = :s, verified_at = now() WHERE email = :e"),
            {"s": status, "e": email},
        )


async def active_client(
    api: httpx.AsyncClient, engine: AsyncEngine, email: str, password: str = PASSWORD
) -> dict[str, Any]:
    """A signed-up client made active without going through the e-mail."""
    created = await sign_up(api, email, password=password)
    await set_status(engine, email, "active")
    return created


async def login(
    api: httpx.AsyncClient, email: str, password: str = PASSWORD, **kwargs: Any
) -> httpx.Response:
    return await api.post(
        f"{API}/auth/login", json={"email": email, "password": password}, **kwargs
    )


async def logged_in(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await login(api, email, password)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def count_rows(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def audit_actions(engine: AsyncEngine, email: str | None = None) -> list[str]:
    """Audit actions in order, optionally only those of one client."""
    query = "SELECT a.action FROM audit_event a"
    params: dict[str, Any] = {}
    if email is not None:
        query += " JOIN client c ON c.id = a.client_id WHERE c.email = :e"
        params["e"] = email
    async with engine.connect() as conn:
        rows = await conn.execute(text(query + " ORDER BY a.id"), params)
        return [row[0] for row in rows]


async def mfa_verify(api: httpx.AsyncClient, mfa_token: str, code: str) -> httpx.Response:
    return await api.post(f"{API}/auth/mfa/verify", json={"mfa_token": mfa_token, "code": code})


async def challenge(api: httpx.AsyncClient, email: str) -> dict[str, Any]:
    response = await login(api, email)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mfa_required"] is True
    assert "access_token" not in body
    return body  # type: ignore[no-any-return]


async def enrol_totp(api: httpx.AsyncClient, access_token: str, clock: FakeClock) -> pyotp.TOTP:
    setup = await api.post(f"{API}/auth/mfa/totp/setup", headers=bearer(access_token))
    assert setup.status_code == 200, setup.text
    body = setup.json()
    uri = urlparse(body["otpauth_uri"])
    assert uri.scheme == "otpauth"
    assert uri.netloc == "totp"
    assert parse_qs(uri.query)["secret"] == [body["secret"]]
    assert parse_qs(uri.query)["issuer"] == ["BrokerX"]
    totp = pyotp.TOTP(body["secret"])
    enabled = await api.post(
        f"{API}/auth/mfa/totp/enable",
        json={"code": totp.at(clock())},
        headers=bearer(access_token),
    )
    assert enabled.status_code == 200, enabled.text
    assert enabled.json() == {"mfa": "totp"}
    return totp
