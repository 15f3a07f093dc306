"""Funded clients for a benchmark.

Decision (documented in docs/performance.md): the bulk of the clients are created
directly in PostgreSQL — active, verified, one argon2id hash (of the api's default
parameters) shared by all since they share one password — and then **log in through
`POST /api/v1/auth/login`** to get real tokens and **deposit through `POST
/api/v1/deposits`**. Shares enter only by seeding (`brokerx_core.seed.grant_shares`).
A few clients also walk the whole public journey first (sign-up, the e-mailed code read
from the launcher's mail catcher, verification, login), so the bench proves it works.
Bench clients turn execution e-mails off (`email_confirmations`, a client preference):
the mail catcher is not what is being measured.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.auth.passwords import HashParameters, PasswordHashing
from brokerx_core.seed import INSTRUMENTS, grant_shares

PASSWORD = "Bench-Passw0rd"
DEPOSIT = Decimal("1000000.00")  # the largest single deposit API.md allows
SHARES_PER_SYMBOL = 100_000
_CODE = re.compile(r"^\s*(\d{6})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class BenchClient:
    email: str
    client_id: uuid.UUID
    account_id: uuid.UUID
    token: str = ""


async def insert_clients(
    engine: AsyncEngine,
    count: int,
    *,
    prefix: str,
    shares: int = SHARES_PER_SYMBOL,
    symbols: list[str] | None = None,
) -> list[BenchClient]:
    """`count` active clients with accounts and `shares` of every symbol (no cash yet)."""
    password_hash = await PasswordHashing(HashParameters()).hash(PASSWORD)
    symbols = symbols or [item.symbol for item in INSTRUMENTS]
    made = []
    async with engine.begin() as conn:
        for i in range(count):
            client_id, account_id = uuid.uuid4(), uuid.uuid4()
            email = f"{prefix}-{i:04d}-{client_id.hex[:6]}@bench.brokerx.local"
            await conn.execute(
                text(
                    "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                    " date_of_birth, address, status, verified_at, email_confirmations)"
                    " VALUES (:id, :email, :pw, 'Bench', :last, '1990-01-01', '1 Bench St',"
                    " 'active', now(), false)"
                ),
                {"id": client_id, "email": email, "pw": password_hash, "last": f"No{i}"},
            )
            await conn.execute(
                text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
                {"id": account_id, "client": client_id},
            )
            for symbol in symbols:
                await grant_shares(conn, account_id, symbol, shares)
            made.append(BenchClient(email, client_id, account_id))
    return made


async def grant_all(engine: AsyncEngine, account_id: uuid.UUID, shares: int) -> None:
    async with engine.begin() as conn:
        for item in INSTRUMENTS:
            await grant_shares(conn, account_id, item.symbol, shares)


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await api.post("/api/v1/auth/login", json={"email": email, "password": password})
    if response.status_code != 200 or "access_token" not in response.json():
        raise RuntimeError(f"login of {email} failed: {response.status_code} {response.text}")
    return str(response.json()["access_token"])


async def deposit(api: httpx.AsyncClient, token: str, amount: Decimal, times: int) -> None:
    for _ in range(times):
        response = await api.post(
            "/api/v1/deposits",
            json={"amount": str(amount)},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
        )
        if response.status_code != 201:
            raise RuntimeError(f"deposit failed: {response.status_code} {response.text}")


async def login_and_fund(
    api_url: str, clients: list[BenchClient], *, deposits: int = 2, parallel: int = 8
) -> list[BenchClient]:
    """Log every client in and deposit `deposits` × 1,000,000.00 through the api."""
    gate = asyncio.Semaphore(parallel)
    limits = httpx.Limits(max_connections=parallel)

    async with httpx.AsyncClient(
        base_url=api_url, timeout=60.0, trust_env=False, limits=limits
    ) as api:

        async def one(client: BenchClient) -> BenchClient:
            async with gate:
                token = await login(api, client.email)
                await deposit(api, token, DEPOSIT, deposits)
                return BenchClient(client.email, client.client_id, client.account_id, token)

        return list(await asyncio.gather(*(one(c) for c in clients)))


def _code_in(mail_dir: Path, email: str) -> str | None:
    for path in sorted(mail_dir.glob("*.eml")):
        message = path.read_text(encoding="utf-8", errors="replace")
        if f"To: {email}" in message and "Verify" in message:
            found = _CODE.search(message)
            if found:
                return found.group(1)
    return None


async def sign_up_by_email(
    api_url: str, mail_dir: Path, engine: AsyncEngine, *, shares: int = SHARES_PER_SYMBOL
) -> tuple[BenchClient, float]:
    """The public journey: sign up, read the e-mailed code, verify, log in, fund.

    Returns the client and how long sign-up → verified took (e-mail delivery included).
    """
    email = f"journey-{uuid.uuid4().hex[:10]}@bench.brokerx.local"
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0, trust_env=False) as api:
        response = await api.post(
            "/api/v1/clients",
            json={
                "email": email,
                "password": PASSWORD,
                "first_name": "Journey",
                "last_name": "Bench",
                "date_of_birth": "1985-06-15",
                "address": "2 Bench Road",
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"sign-up failed: {response.status_code} {response.text}")
        client_id = uuid.UUID(response.json()["id"])
        deadline = time.monotonic() + 30
        code = _code_in(mail_dir, email)
        while code is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no verification e-mail for {email} in {mail_dir}")
            await asyncio.sleep(0.1)
            code = _code_in(mail_dir, email)
        response = await api.post("/api/v1/clients/verify", json={"email": email, "code": code})
        if response.status_code != 200:
            raise RuntimeError(f"verification failed: {response.status_code} {response.text}")
        verified = time.perf_counter() - started
        token = await login(api, email)
        auth = {"Authorization": f"Bearer {token}"}
        await api.patch("/api/v1/me", json={"email_confirmations": False}, headers=auth)
        account = await api.get("/api/v1/account", headers=auth)
        account_id = uuid.UUID(account.json()["id"])
        await deposit(api, token, DEPOSIT, 2)
    await grant_all(engine, account_id, shares)
    return BenchClient(email, client_id, account_id, token), verified
