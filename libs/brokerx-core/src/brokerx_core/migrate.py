"""Run the schema migrations: `python -m brokerx_core.migrate [upgrade|downgrade] [rev]`.

Alembic runs in a worker thread because its env.py drives its own event loop.

Rollback rule: `upgrade` to head is a no-op (exit 0, warning `schema_newer_than_code`)
when the database is at a revision this code does not know. That is a rolled-back
release meeting the schema of a newer one; migrations are written backward compatible
(docs/operations.md, "Deploy"), so the older code runs on it. Without the rule Alembic
fails with "Can't locate revision", the compose `migrate` service exits 1 and api,
matching and worker never start. The price: a database stamped by an unrelated Alembic
project is not refused here either (the services' own checks fail on it instead).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from brokerx_core.observability.logging import configure_logging, get_logger
from brokerx_core.settings import BrokerXSettings

log = get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and `database_url`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def earlier_function(filename: str) -> str:
    """The `FUNCTION` of an earlier revision (`migrations/versions/<filename>`), as a
    statement that replaces the function in place: what a later revision edits, or puts
    back on downgrade, without a second copy that could drift."""
    path = MIGRATIONS_DIR / "versions" / filename
    spec = importlib.util.spec_from_file_location(f"brokerx_migration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    original: str = module.FUNCTION
    return original.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def database_revisions(database_url: str) -> tuple[str, ...]:
    """The revisions in the database's `alembic_version` (none for a fresh database)."""

    async def read() -> tuple[str, ...]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: tuple(MigrationContext.configure(sync).get_current_heads())
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def unknown_revisions(config: Config, revisions: tuple[str, ...]) -> list[str]:
    """The revisions this code's migrations do not contain (exact ids, no prefixes)."""
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    return [revision for revision in revisions if revision not in known]


def upgrade(database_url: str, revision: str = "head") -> bool:
    """Migrate the database up to `revision`; False when it was left alone because it
    is already past this code's head (see the module docstring)."""
    config = alembic_config(database_url)
    if revision == "head":
        unknown = unknown_revisions(config, database_revisions(database_url))
        if unknown:
            log.warning(
                "schema_newer_than_code",
                database_revisions=unknown,
                code_head=ScriptDirectory.from_config(config).get_current_head(),
                action="no migration run; this code relies on the newer schema being "
                "backward compatible",
            )
            return False
    command.upgrade(config, revision)
    return True


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database down to `revision`."""
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> bool:
    """`upgrade` from inside a running event loop."""
    return await asyncio.to_thread(upgrade, database_url, revision)


def main() -> None:
    settings = BrokerXSettings()
    configure_logging("migrate", settings.log_level, json=settings.log_json)
    action = sys.argv[1] if len(sys.argv) > 1 else "upgrade"
    url = settings.sqlalchemy_url
    if action == "upgrade":
        upgrade(url, sys.argv[2] if len(sys.argv) > 2 else "head")
    elif action == "downgrade":
        downgrade(url, sys.argv[2] if len(sys.argv) > 2 else "base")
    else:
        raise SystemExit(f"unknown action {action!r}: use upgrade or downgrade")


if __name__ == "__main__":
    main()
