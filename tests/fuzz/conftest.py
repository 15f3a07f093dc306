"""The api served for real (uvicorn in a thread with its own event loop) for fuzzing.

schemathesis drives the api synchronously over HTTP (requests), so the app runs in a
thread of its own: its engine and Redis pool live on that thread's loop, never on the
test session's. Settings are the tests' plus throttles high enough for a fuzzer.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.auth.passwords import HashParameters, PasswordHashing
from brokerx_core.seed import credit_deposit, grant_shares, seed_instruments
from tests.conftest import settings_overrides
from tests.support.servers import ServerUrls
from tests.support.smtp import free_port

PASSWORD = "Fuzz-Passw0rd"
FUZZ_SETTINGS = {
    "rate_limit_signup_per_minute": 1_000_000,
    "rate_limit_login_ip_per_minute": 1_000_000,
    "rate_limit_login_account_per_minute": 1_000_000,
    "rate_limit_verify_per_minute": 1_000_000,
    "rate_limit_verify_ip_per_minute": 1_000_000,
    "rate_limit_resend_per_minute": 1_000_000,
    "password_hash_memory_kib": 1024,
    "password_hash_time_cost": 1,
}


@dataclass(frozen=True)
class LiveApi:
    url: str


class _Server(threading.Thread):
    def __init__(self, settings: Any, port: int) -> None:
        super().__init__(name="fuzz-api", daemon=True)
        self.settings = settings
        self.port = port
        self.server: uvicorn.Server | None = None
        self.failure: BaseException | None = None

    def run(self) -> None:
        from brokerx_api.app import create_app

        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=3,
        )
        self.server = uvicorn.Server(config)
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # reported by the fixture
            self.failure = exc


@pytest.fixture(scope="module")
def live_api(servers: ServerUrls, database_url: str) -> Iterator[LiveApi]:
    from brokerx_api.settings import ApiSettings

    settings = ApiSettings(
        **settings_overrides(servers, database_url),
        **FUZZ_SETTINGS,
    )
    thread = _Server(settings, free_port())
    thread.start()
    url = f"http://127.0.0.1:{thread.port}"
    for _ in range(300):
        if thread.failure is not None or not thread.is_alive():
            raise RuntimeError(f"the api did not start: {thread.failure!r}")
        if thread.server is not None and thread.server.started:
            break
        threading.Event().wait(0.05)
    else:
        raise RuntimeError("the api did not start within 15 s")
    yield LiveApi(url)
    assert thread.server is not None
    thread.server.should_exit = True
    thread.join(15)


@pytest.fixture(scope="module")
async def fuzz_client(_session_engine: AsyncEngine) -> str:
    """A funded client (cash and shares of every instrument); yields its e-mail."""
    email = f"fuzz-{uuid.uuid4().hex[:10]}@example.com"
    password_hash = await PasswordHashing(HashParameters(memory_kib=1024, time_cost=1)).hash(
        PASSWORD
    )
    client_id, account_id = uuid.uuid4(), uuid.uuid4()
    async with _session_engine.begin() as conn:
        await seed_instruments(conn)
        await conn.execute(
            text(
                "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                " date_of_birth, address, status, verified_at)"
                " VALUES (:id, :email, :pw, 'Fuzz', 'Tester', '1990-01-01', '1 Fuzz St',"
                " 'active', now())"
            ),
            {"id": client_id, "email": email, "pw": password_hash},
        )
        await conn.execute(
            text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
            {"id": account_id, "client": client_id},
        )
        await credit_deposit(conn, account_id, Decimal("1000000.00"))
        for symbol in ("AAPL", "MSFT", "AMZN", "GOOGL", "TSLA", "NVDA", "META", "NFLX"):
            await grant_shares(conn, account_id, symbol, 100_000)
    return email


@pytest.fixture
async def bearer(live_api: LiveApi, fuzz_client: str, _session_engine: AsyncEngine) -> str:
    """A fresh access token per fuzzed operation: an example may have logged the session
    out or switched MFA on, so the client is reset to a plain active login first."""
    async with _session_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE client SET mfa_method = 'none', totp_secret = NULL, status = 'active',"
                " locked_until = NULL, failed_login_count = 0, failed_mfa_count = 0"
                " WHERE email = :email"
            ),
            {"email": fuzz_client},
        )
    async with httpx.AsyncClient(base_url=live_api.url, trust_env=False, timeout=30) as http:
        response = await http.post(
            "/api/v1/auth/login", json={"email": fuzz_client, "password": PASSWORD}
        )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
