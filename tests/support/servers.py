"""Where the tests find PostgreSQL and Redis.

`TEST_DATABASE_URL` / `TEST_REDIS_URL` when set (CI points them at the machine's
servers); otherwise throwaway embedded servers under `.devdata/test` started by the
devstack (the same code `make run` uses).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class ServerUrls:
    admin_database_url: str  # a database to connect to for CREATE/DROP DATABASE
    database_url: str  # the test database (created fresh each session)
    redis_url: str


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def discover(database_name: str = "brokerx_test") -> ServerUrls:
    """Resolve the servers for this test session (starting embedded ones if needed)."""
    db = os.environ.get("TEST_DATABASE_URL")
    redis = os.environ.get("TEST_REDIS_URL")
    if not db or not redis:
        from brokerx_devstack.servers import ensure_servers

        started = ensure_servers(".devdata/test")
        db = db or started.database_url
        redis = redis or started.redis_url
    url = make_url(db)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    db = url.render_as_string(hide_password=False)
    return ServerUrls(
        admin_database_url=_with_database(db, "postgres"),
        database_url=_with_database(db, database_name),
        redis_url=redis,
    )
