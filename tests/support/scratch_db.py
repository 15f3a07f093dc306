"""An empty database of a test's own, for migrations run from scratch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.servers import ServerUrls


@asynccontextmanager
async def scratch_database(
    servers: ServerUrls, prefix: str = "brokerx_scratch"
) -> AsyncIterator[str]:
    """The URL of an empty database named `<prefix>_<random>`, dropped afterwards."""
    admin = create_async_engine(servers.admin_database_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield servers.database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
