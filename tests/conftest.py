"""Fixtures on real PostgreSQL and Redis: a freshly migrated database per session,
emptied between tests; Redis flushed between tests; the api in-process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from brokerx_core.db import create_sessionmaker
from brokerx_core.migrate import upgrade_async
from brokerx_core.seed import seed_instruments
from tests.support.servers import ServerUrls, discover
from tests.support.smtp import SmtpSink

# Tables emptied between tests (everything but alembic's bookkeeping).
_TRUNCATE = (
    "TRUNCATE audit_event, email_message, trade, outbox, report_outbox, ledger_entry, deposit,"
    " idempotency_record, share_grant, position, client_order, refresh_token, auth_session,"
    " verification_code, account, client, instrument RESTART IDENTITY CASCADE"
)


@pytest.fixture(scope="session")
def servers() -> ServerUrls:
    # One database per test process, so concurrent runs on one server never collide.
    return discover(f"brokerx_test_{os.getpid()}")


@pytest.fixture(scope="session")
async def database_url(servers: ServerUrls) -> AsyncIterator[str]:
    """A database created and migrated once for the whole session, dropped at the end."""
    admin = create_async_engine(servers.admin_database_url, isolation_level="AUTOCOMMIT")
    name = servers.database_url.rsplit("/", 1)[1]
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await upgrade_async(servers.database_url)
    yield servers.database_url
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="session")
async def _session_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url, pool_size=20, max_overflow=20)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def _session_redis(servers: ServerUrls) -> AsyncIterator[Redis]:
    client = Redis.from_url(servers.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def _clean_state(_session_engine: AsyncEngine, _session_redis: Redis) -> None:
    """Empty every table and the Redis database: once per test, before it runs."""
    async with _session_engine.begin() as conn:
        await conn.execute(text(_TRUNCATE))
    await _session_redis.flushdb()


@pytest.fixture
def engine(_clean_state: None, _session_engine: AsyncEngine) -> AsyncEngine:
    """The test database's engine; the database is empty when the test starts."""
    return _session_engine


@pytest.fixture
def redis(_clean_state: None, _session_redis: Redis) -> Redis:
    """A Redis client on the test database; flushed when the test starts."""
    return _session_redis


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def instruments(engine: AsyncEngine) -> None:
    """The seeded instrument list (AAPL, MSFT, ...), without the market maker."""
    async with engine.begin() as conn:
        await seed_instruments(conn)


def settings_overrides(servers: ServerUrls, database_url: str) -> dict[str, Any]:
    """Settings every service gets in tests."""
    return {
        "environment": "test",
        "database_url": database_url,
        "redis_url": servers.redis_url,
        "log_json": True,
        "log_level": "WARNING",
    }


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server on a free port."""
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def api_app(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[Any]:
    """The api application with its lifespan running (in-process)."""
    from brokerx_api.app import create_app
    from brokerx_api.settings import ApiSettings

    app = create_app(ApiSettings(**settings_overrides(servers, database_url)))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(api_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the in-process api."""
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
