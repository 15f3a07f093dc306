"""What a PostgreSQL restart does to a process's connections, done to some of them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = :name AND datname = current_database()"
)


async def terminate_backends(engine: AsyncEngine, application_name: str) -> int:
    """Terminate every backend of this database opened by `application_name`; how many."""
    async with engine.connect() as conn:
        return int((await conn.execute(_TERMINATE, {"name": application_name})).scalar_one())
