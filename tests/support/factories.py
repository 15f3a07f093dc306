"""Async factories that put clients, sessions and positions straight into the database.

They bypass sign-up and login so a test of another feature needs neither; what they
write keeps every invariant of DESIGN.md true (cash enters as a deposit with its
ledger entry, shares as a share grant), so `find_violations` stays empty.

    alice = await create_client(engine, cash=Decimal("1000.00"))
    token = await create_session_token(api_app, alice.client_id)
    await grant_position(engine, alice.account_id, "AAPL", 10)   # needs `instruments`
    await api.get("/api/v1/account", headers=bearer(token))
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_core.seed import credit_deposit, grant_shares

DEFAULT_PASSWORD = "Correct-Horse-42"

DbTarget = AsyncEngine | async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class ClientFixture:
    """A client made by `create_client`: ids, e-mail and the password that logs it in."""

    client_id: uuid.UUID
    account_id: uuid.UUID
    email: str
    password: str = DEFAULT_PASSWORD


@cache
def _password_hash(password: str) -> str:
    # Cheap argon2id parameters: verifiers read them from the hash, so login works
    # while a test creating hundreds of clients stays fast.
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password)


@asynccontextmanager
async def _transaction(target: DbTarget) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that commits on exit, from an engine or a
    sessionmaker."""
    if isinstance(target, AsyncEngine):
        async with target.begin() as conn:
            yield conn
    else:
        async with target() as session, session.begin():
            yield await session.connection()


async def create_client(
    target: DbTarget,
    *,
    email: str | None = None,
    status: str = "active",
    cash: Decimal = Decimal("0"),
    password: str = DEFAULT_PASSWORD,
    mfa_method: str = "none",
    first_name: str = "Test",
    last_name: str = "Client",
) -> ClientFixture:
    """Insert a client (verified when `status="active"`) and its USD account.

    `cash > 0` enters as a settled deposit with its ledger entry, like a real deposit,
    so the ledger invariants hold. `password` logs the client in through the real
    login endpoint. `target` is the test `engine` or a sessionmaker.
    """
    client_id, account_id = uuid.uuid4(), uuid.uuid4()
    email = (email or f"client-{uuid.uuid4().hex[:12]}@example.com").lower()
    async with _transaction(target) as conn:
        await conn.execute(
            text(
                "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                " date_of_birth, address, status, mfa_method, verified_at)"
                " VALUES (:id, :email, :pw, :first, :last, :dob, '1 Test Street, Montreal',"
                " :status, :mfa, :verified_at)"
            ),
            {
                "id": client_id,
                "email": email,
                "pw": _password_hash(password),
                "first": first_name,
                "last": last_name,
                "dob": date(1990, 1, 1),
                "status": status,
                "mfa": mfa_method,
                "verified_at": datetime.now(UTC) if status == "active" else None,
            },
        )
        await conn.execute(
            text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
            {"id": account_id, "client": client_id},
        )
        if cash > 0:
            await credit_deposit(conn, account_id, cash)
    return ClientFixture(client_id, account_id, email, password)


async def create_session_token(api_app: Any, client_id: uuid.UUID) -> str:
    """Open a login session for a client (an `auth_session` row) and mint its access token.

    The token is signed by the app's token service (or one built from its settings),
    so `CurrentClient` accepts it until the session is revoked or the token expires.
    """
    from brokerx_api.auth.deps import token_service_from

    settings = api_app.state.settings
    session_id = uuid.uuid4()
    async with _transaction(api_app.state.sessionmaker) as conn:
        await conn.execute(
            text(
                "INSERT INTO auth_session (id, client_id, expires_at, ip, user_agent)"
                " VALUES (:id, :client, now() + make_interval(secs => :ttl),"
                " '127.0.0.1', 'tests')"
            ),
            {"id": session_id, "client": client_id, "ttl": settings.refresh_token_ttl_seconds},
        )
    tokens = getattr(api_app.state, "token_service", None) or token_service_from(settings)
    return str(tokens.issue_access(client_id, session_id))


def bearer(token: str) -> dict[str, str]:
    """The `Authorization` header for an access token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True, slots=True)
class LoggedInClient:
    """A client with a live session: `headers` authenticate api requests as it."""

    client: ClientFixture
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    @property
    def client_id(self) -> uuid.UUID:
        return self.client.client_id

    @property
    def account_id(self) -> uuid.UUID:
        return self.client.account_id


async def create_logged_in_client(api_app: Any, **client_fields: Any) -> LoggedInClient:
    """`create_client` (same keyword arguments) + `create_session_token` in one call."""
    client = await create_client(api_app.state.sessionmaker, **client_fields)
    return LoggedInClient(client, await create_session_token(api_app, client.client_id))


@dataclass(frozen=True, slots=True)
class AccountState:
    """What an account holds and has recorded: compare two to prove nothing changed."""

    cash: Decimal
    reserved_cash: Decimal
    ledger_entries: int
    deposits: int
    idempotency_records: int
    positions: tuple[tuple[str, int, int], ...]  # (symbol, quantity, reserved_quantity)


async def account_state(target: DbTarget, account_id: uuid.UUID) -> AccountState:
    """Snapshot an account's balances, record counts and positions."""
    async with _transaction(target) as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT a.cash, a.reserved_cash,"
                    " (SELECT count(*) FROM ledger_entry WHERE account_id = a.id),"
                    " (SELECT count(*) FROM deposit WHERE account_id = a.id),"
                    " (SELECT count(*) FROM idempotency_record WHERE client_id = a.client_id)"
                    " FROM account a WHERE a.id = :id"
                ),
                {"id": account_id},
            )
        ).one()
        positions = (
            await conn.execute(
                text(
                    "SELECT symbol, quantity, reserved_quantity FROM position"
                    " WHERE account_id = :id ORDER BY symbol"
                ),
                {"id": account_id},
            )
        ).all()
    return AccountState(
        row[0], row[1], row[2], row[3], row[4], tuple((p[0], p[1], p[2]) for p in positions)
    )


async def grant_position(
    target: AsyncEngine, account_id: uuid.UUID, symbol: str, quantity: int
) -> None:
    """Seed `quantity` shares of `symbol` into an account (a share grant + position).

    The instrument must exist (use the `instruments` fixture).
    """
    async with _transaction(target) as conn:
        await grant_shares(conn, account_id, symbol, quantity)
