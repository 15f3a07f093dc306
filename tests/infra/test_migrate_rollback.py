"""`python -m brokerx_core.migrate upgrade` (the compose `migrate` service) on real
PostgreSQL when a release is rolled back: the database is at a revision this code does
not know, and the command must succeed without touching the schema, otherwise
api/matching/worker never start (docs/operations.md, "Rollback").
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from brokerx_core.migrate import alembic_config, downgrade, upgrade_async
from tests.support.servers import ServerUrls

from .conftest import REPO_ROOT

# The next release's migration, as the older code sees it: an id it has never heard of
# (one past this code's head, whatever that is now).
_HEAD = ScriptDirectory.from_config(alembic_config("")).get_current_head()
NEWER_REVISION = f"{int(_HEAD or 0) + 1:04d}"

SCHEMA = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'function ' || p.proname || ' ' || md5(p.prosrc)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'index ' || indexname || ' ' || md5(indexdef) FROM pg_indexes WHERE schemaname = 'public'
ORDER BY 1
"""


async def _admin(servers: ServerUrls, statement: str) -> None:
    engine = create_async_engine(servers.admin_database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _query(url: str, statement: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement))
            return [str(row[0]) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


@pytest.fixture
async def fresh_database(servers: ServerUrls) -> AsyncIterator[str]:
    """An empty database of its own, dropped afterwards."""
    name = f"brokerx_mig_{uuid.uuid4().hex[:10]}"
    await _admin(servers, f'CREATE DATABASE "{name}"')
    yield servers.database_url.rsplit("/", 1)[0] + f"/{name}"
    await _admin(servers, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_migrate(database_url: str) -> subprocess.CompletedProcess[str]:
    """The compose `migrate` service's first command, as a process of its own."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
        "LOG_JSON": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "brokerx_core.migrate", "upgrade"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_compose_runs_exactly_this_command() -> None:
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert "python -m brokerx_core.migrate upgrade && python -m brokerx_core.seed" in compose


async def test_upgrade_on_a_schema_newer_than_the_code_succeeds_and_changes_nothing(
    fresh_database: str,
) -> None:
    assert await upgrade_async(fresh_database) is True
    # A later release migrated the database, then its deploy was rolled back.
    await _query(fresh_database, f"UPDATE alembic_version SET version_num = '{NEWER_REVISION}'")
    schema_before = await _query(fresh_database, SCHEMA)
    assert any(line.startswith("function intake_place_orders ") for line in schema_before)

    result = run_migrate(fresh_database)

    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [
        json.loads(line)
        for line in result.stdout.splitlines()
        if line.startswith("{") and "schema_newer_than_code" in line
    ]
    assert len(warnings) == 1, result.stdout + result.stderr
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["database_revisions"] == [NEWER_REVISION]
    assert await _query(fresh_database, "SELECT version_num FROM alembic_version") == [
        NEWER_REVISION
    ]
    assert await _query(fresh_database, SCHEMA) == schema_before


async def test_upgrade_still_migrates_a_database_the_code_knows(fresh_database: str) -> None:
    empty = run_migrate(fresh_database)
    assert empty.returncode == 0, empty.stdout + empty.stderr
    assert "schema_newer_than_code" not in empty.stdout
    head = await _query(fresh_database, "SELECT version_num FROM alembic_version")
    assert len(head) == 1
    assert head != [NEWER_REVISION]

    # An older known revision is upgraded as before.
    await asyncio.to_thread(downgrade, fresh_database, "0009")
    assert await _query(fresh_database, "SELECT version_num FROM alembic_version") == ["0009"]
    again = run_migrate(fresh_database)
    assert again.returncode == 0, again.stdout + again.stderr
    assert await _query(fresh_database, "SELECT version_num FROM alembic_version") == head


async def test_upgrade_fails_loudly_on_an_unreachable_database() -> None:
    result = run_migrate("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    assert result.returncode != 0
