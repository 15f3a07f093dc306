"""Run the schema migrations: `python -m brokerx_core.migrate [upgrade|downgrade] [rev]`.

Alembic runs in a worker thread because its env.py drives its own event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from brokerx_core.settings import BrokerXSettings

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


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Migrate the database down to `revision`."""
    command.downgrade(alembic_config(database_url), revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`upgrade` from inside a running event loop."""
    await asyncio.to_thread(upgrade, database_url, revision)


def main() -> None:
    settings = BrokerXSettings()
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
