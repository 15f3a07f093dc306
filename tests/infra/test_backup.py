"""Backups against the suite's real PostgreSQL (`servers`: TEST_DATABASE_URL, or the
embedded server tests/support/servers.py starts): the worker's job writes a verified
dump, restore.sh brings it back into a fresh database identically, retention keeps the
right files, and a failed dump destroys nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from brokerx_worker import backup
from brokerx_worker.backup import backup_cron_job, nightly_backup, prime_backup_metrics
from brokerx_worker.backup_files import BackupFailed, pg_dump_command
from brokerx_worker.backup_retention import (
    apply_retention,
    backup_filename,
    parse_backup_time,
    select_expired,
)
from brokerx_worker.backup_status import STATUS_FILE
from brokerx_worker.cron import arq_cron_kwargs

from .conftest import REPO_ROOT, PgServer, require_binary

RESTORE = REPO_ROOT / "scripts/restore.sh"


@dataclass
class FakeSettings:
    """The attributes the job reads from the worker settings."""

    backup_dir: str
    libpq_url: str
    backup_keep_daily: int = 7
    backup_keep_weekly: int = 4


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture(scope="module")
def pg_tools() -> None:
    for tool in ("pg_dump", "pg_restore", "psql"):
        require_binary(tool)


@dataclass(frozen=True)
class Databases:
    """Databases on the suite's server, as the backup and restore tools see them."""

    server: PgServer

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(self.server.url(database), timeout=5)

    async def drop(self, database: str) -> None:
        admin = await self.connect()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()

    async def snapshot(self, database: str) -> dict[str, list[tuple[object, ...]]]:
        conn = await self.connect(database)
        try:
            return {
                "account": [
                    tuple(r) for r in await conn.fetch("SELECT * FROM account ORDER BY id")
                ],
                "trade": [tuple(r) for r in await conn.fetch("SELECT * FROM trade ORDER BY id")],
            }
        finally:
            await conn.close()

    def restore(
        self, dump: Path, target: str, **env_overrides: str
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "RESTORE_MODE": "local",
            "RESTORE_SERVER_URL": self.server.url(),
            "RESTORE_SKIP_INVARIANTS": "1",
            **env_overrides,
        }
        return subprocess.run(
            [str(RESTORE), str(dump), target], env=env, capture_output=True, text=True, timeout=120
        )


@pytest.fixture
def pg(pg_server: PgServer) -> Databases:
    return Databases(pg_server)


@pytest.fixture
async def scratch_db(pg_tools: None, pg: Databases) -> AsyncIterator[str]:
    """A throwaway database with two tables and a few rows (NUMERIC, text, timestamps)."""
    name = f"brokerx_bk_{uuid.uuid4().hex[:10]}"
    admin = await pg.connect()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await pg.connect(name)
    try:
        await conn.execute(
            """
            CREATE TABLE account (
                id serial PRIMARY KEY, owner text NOT NULL, cash numeric(18, 2) NOT NULL
            );
            CREATE TABLE trade (
                id bigserial PRIMARY KEY,
                account_id int NOT NULL REFERENCES account (id),
                symbol text NOT NULL, price numeric(18, 4) NOT NULL, quantity int NOT NULL,
                executed_at timestamptz NOT NULL DEFAULT now()
            );
            INSERT INTO account (owner, cash) VALUES
                ('alice', 1000.10), ('bob', 250.00), ('market-maker', 1000000.00);
            INSERT INTO trade (account_id, symbol, price, quantity) VALUES
                (1, 'AAPL', 189.2500, 3), (2, 'MSFT', 411.1000, 1),
                (3, 'AAPL', 189.2600, 10), (1, 'TSLA', 0.0100, 100);
            """
        )
    finally:
        await conn.close()
    yield name
    await pg.drop(name)


@pytest.fixture
def restored_names(pg_server: PgServer) -> Iterator[list[str]]:
    """Databases created by restore.sh during a test, dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(
            ["psql", pg_server.url(), "-qc", f'DROP DATABASE IF EXISTS "{name}"'],
            capture_output=True,
            check=False,
        )


# Blocking helpers: the async tests call them on purpose (a test waits for its tools).
def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


async def test_backup_job_writes_a_verified_dump_and_sets_the_gauges(
    scratch_db: str, pg: Databases, tmp_path: Path
) -> None:
    settings = FakeSettings(
        backup_dir=str(tmp_path / "backups"), libpq_url=pg.server.url(scratch_db)
    )
    before = datetime.now(UTC).replace(microsecond=0)

    result = await nightly_backup({"settings": settings})

    dump = Path(result["file"])
    assert dump.parent == tmp_path / "backups"
    assert re.fullmatch(r"brokerx-\d{8}T\d{6}Z\.dump", dump.name)
    assert parse_backup_time(dump.name) >= before
    content = read_bytes(dump)
    assert content.startswith(b"PGDMP")  # pg_dump custom format
    digest = hashlib.sha256(content).hexdigest()
    assert (tmp_path / "backups" / f"{dump.name}.sha256").read_text() == f"{digest}  {dump.name}\n"
    assert result["sha256"] == digest
    assert result["size_bytes"] == len(content)
    assert file_mode(dump) == 0o600  # a dump holds every client's data
    assert sorted(p.name for p in dump.parent.iterdir()) == [dump.name, f"{dump.name}.sha256"]
    assert (
        sample("brokerx_backup_last_success_timestamp_seconds")
        == parse_backup_time(dump.name).timestamp()
    )
    assert sample("brokerx_backup_last_size_bytes") == len(content)
    # sha256sum itself agrees (restore.sh and operators verify with it).
    assert run(["sha256sum", "-c", f"{dump.name}.sha256"], cwd=dump.parent).returncode == 0


async def test_restore_into_a_fresh_database_returns_identical_data(
    scratch_db: str, pg: Databases, tmp_path: Path, restored_names: list[str]
) -> None:
    settings = FakeSettings(backup_dir=str(tmp_path), libpq_url=pg.server.url(scratch_db))
    dump = Path((await nightly_backup({"settings": settings}))["file"])
    original = await pg.snapshot(scratch_db)
    await pg.drop(scratch_db)  # the disaster

    target = f"brokerx_rs_{uuid.uuid4().hex[:10]}"
    restored_names.append(target)
    result = pg.restore(dump, target)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "checksum OK" in result.stdout
    assert re.search(r"public\.account\s*\|\s*3\b", result.stdout), result.stdout
    assert re.search(r"public\.trade\s*\|\s*4\b", result.stdout), result.stdout
    assert await pg.snapshot(target) == original
    # The sequences came back too: the next id follows the restored rows.
    conn = await pg.connect(target)
    try:
        new_id = await conn.fetchval(
            "INSERT INTO account (owner, cash) VALUES ('carol', 1) RETURNING id"
        )
    finally:
        await conn.close()
    assert new_id == 4


async def test_restore_runs_the_invariant_checker_on_the_restored_database(
    scratch_db: str, pg: Databases, tmp_path: Path, restored_names: list[str]
) -> None:
    settings = FakeSettings(backup_dir=str(tmp_path / "b"), libpq_url=pg.server.url(scratch_db))
    dump = Path((await nightly_backup({"settings": settings}))["file"])
    calls = tmp_path / "checker.log"
    checker = tmp_path / "fake-python"
    # Stands for `python -m brokerx_core.invariants`: records how it was called.
    checker.write_text(
        f'#!/bin/sh\necho "$* DATABASE_URL=$DATABASE_URL" >> {calls}\nexit "${{FAKE_EXIT:-0}}"\n'
    )
    checker.chmod(0o755)

    ok_target = f"brokerx_rs_{uuid.uuid4().hex[:10]}"
    restored_names.append(ok_target)
    ok = pg.restore(dump, ok_target, RESTORE_SKIP_INVARIANTS="", PYTHON=str(checker))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "invariants hold" in ok.stdout
    assert calls.read_text().split() == [
        "-m",
        "brokerx_core.invariants",
        f"DATABASE_URL={pg.server.url(ok_target, password=False)}",
    ]

    bad_target = f"brokerx_rs_{uuid.uuid4().hex[:10]}"
    restored_names.append(bad_target)
    bad = pg.restore(
        dump, bad_target, RESTORE_SKIP_INVARIANTS="", PYTHON=str(checker), FAKE_EXIT="3"
    )
    assert bad.returncode != 0
    assert "invariant violations" in bad.stderr
    assert await pg.snapshot(bad_target) == await pg.snapshot(scratch_db)  # kept for inspection


async def test_restore_refuses_a_corrupt_or_unverifiable_file(
    scratch_db: str, pg: Databases, tmp_path: Path, restored_names: list[str]
) -> None:
    settings = FakeSettings(backup_dir=str(tmp_path), libpq_url=pg.server.url(scratch_db))
    dump = Path((await nightly_backup({"settings": settings}))["file"])
    target = f"brokerx_rs_{uuid.uuid4().hex[:10]}"
    restored_names.append(target)

    corrupt = tmp_path / "corrupt" / dump.name
    corrupt.parent.mkdir()
    corrupt.write_bytes(read_bytes(dump)[:-10] + b"0123456789")
    (corrupt.parent / f"{dump.name}.sha256").write_text(
        (tmp_path / f"{dump.name}.sha256").read_text()
    )
    result = pg.restore(corrupt, target)
    assert result.returncode != 0
    assert "checksum mismatch" in result.stderr

    (corrupt.parent / f"{dump.name}.sha256").unlink()
    result = pg.restore(corrupt, target)
    assert result.returncode != 0
    assert ".sha256 is missing" in result.stderr

    conn = await pg.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname=$1", target) == 0
    finally:
        await conn.close()


async def test_restore_never_overwrites_an_existing_database(
    scratch_db: str, pg: Databases, tmp_path: Path
) -> None:
    settings = FakeSettings(backup_dir=str(tmp_path), libpq_url=pg.server.url(scratch_db))
    dump = Path((await nightly_backup({"settings": settings}))["file"])
    result = pg.restore(dump, scratch_db)
    assert result.returncode != 0
    assert "already exists" in result.stderr
    assert len((await pg.snapshot(scratch_db))["trade"]) == 4


async def test_a_failed_dump_keeps_older_backups_and_counts_the_failure(
    pg_tools: None, tmp_path: Path
) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    older = []
    for days in (1, 2, 9):
        dump = directory / backup_filename(datetime.now(UTC) - timedelta(days=days))
        dump.write_bytes(b"PGDMP older backup")
        (directory / f"{dump.name}.sha256").write_text("x  " + dump.name + "\n")
        older.append(dump)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    settings = FakeSettings(
        backup_dir=str(directory), libpq_url="postgresql://postgres@127.0.0.1:1/nowhere"
    )

    with pytest.raises(BackupFailed, match="pg_dump exited"):
        await nightly_backup({"settings": settings})

    after = {p.name: p.read_bytes() for p in directory.iterdir() if p.name != STATUS_FILE}
    assert after == before  # no partial left, older backups untouched
    assert sample("brokerx_backup_failures_total") == 1  # recorded in the directory
    newest = parse_backup_time(older[0].name)
    assert newest is not None
    assert sample("brokerx_backup_last_success_timestamp_seconds") == newest.timestamp()


async def test_backup_script_runs_the_job_from_the_command_line(
    scratch_db: str, pg: Databases, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BACKUP_MODE": "local",
        "DATABASE_URL": pg.server.app_url(scratch_db),
        "BACKUP_DIR": str(tmp_path / "cli"),
        "ENVIRONMENT": "test",
    }
    result = run([str(REPO_ROOT / "scripts/backup.sh")], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    dumps = list((tmp_path / "cli").glob("brokerx-*.dump"))
    assert len(dumps) == 1
    assert (tmp_path / "cli" / f"{dumps[0].name}.sha256").exists()


# --- pure parts -------------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_retention_keeps_newest_per_day_for_7_days_and_per_iso_week_for_4_weeks() -> None:
    now = at("2025-03-15T12:00:00")  # a Saturday, ISO week 11
    backups = [
        (Path(f"d{day:02d}"), at("2025-02-01T02:00:00") + timedelta(days=day)) for day in range(42)
    ]  # daily at 02:00 from Feb 1 to Mar 14
    backups += [
        (Path("mar15-0100"), at("2025-03-15T01:00:00")),
        (Path("mar15-0200"), at("2025-03-15T02:00:00")),
        (Path("mar13-2300"), at("2025-03-13T23:00:00")),
    ]
    named = {path: when for path, when in backups}

    expired = select_expired(backups, now=now, keep_daily=7, keep_weekly=4)
    kept = {named[p].strftime("%m-%d %H") for p in named if p not in expired}

    assert kept == {
        # newest of each of the last 7 days (Mar 9 .. Mar 15)
        "03-15 02", "03-14 02", "03-13 23", "03-12 02", "03-11 02", "03-10 02", "03-09 02",
        # newest of ISO weeks 10 (Mar 3-9, already kept), 9 (Feb 24 - Mar 2), 8 (Feb 17-23)
        "03-02 02", "02-23 02",
    }  # fmt: skip
    assert expired == sorted(expired, key=lambda p: named[p])  # oldest first


def test_retention_edge_cases() -> None:
    now = at("2025-03-15T12:00:00")
    assert select_expired([], now=now) == []
    # A clock far ahead must not wipe everything: the newest backup always stays.
    old = [(Path("a"), at("2024-01-01T02:00:00")), (Path("b"), at("2024-01-02T02:00:00"))]
    assert select_expired(old, now=now) == [Path("a")]
    # A backup dated in the future (clock skew) is not ours to judge.
    future = [(Path("f"), now + timedelta(hours=3)), (Path("n"), now - timedelta(hours=1))]
    assert select_expired(future, now=now) == []
    # Zero days of dailies: only the weekly newest (and the overall newest) stay.
    week = [(Path(str(i)), now - timedelta(days=i)) for i in range(5)]  # Mar 10..15, ISO wk 11
    assert set(select_expired(week, now=now, keep_daily=0, keep_weekly=1)) == {
        Path("1"), Path("2"), Path("3"), Path("4")
    }  # fmt: skip


def test_apply_retention_removes_dumps_with_their_checksums_only(tmp_path: Path) -> None:
    now = at("2025-03-15T12:00:00")
    for days in range(0, 60, 3):
        dump = tmp_path / backup_filename(now - timedelta(days=days))
        dump.write_text("dump")
        (tmp_path / f"{dump.name}.sha256").write_text("sum")
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "brokerx-latest.dump").write_text("not a backup name: never touched")

    deleted = apply_retention(tmp_path, now=now, keep_daily=7, keep_weekly=4)

    remaining = sorted(p.name for p in tmp_path.glob("brokerx-2*.dump"))
    # Days Mar 15, 12, 9 (last 7 days); Feb 28 (ISO week 9) and Feb 22 (week 8).
    assert remaining == [backup_filename(now - timedelta(days=d)) for d in (21, 15, 6, 3, 0)]
    assert {p.name for p in deleted}.isdisjoint(remaining)
    for dump in deleted:
        assert not dump.exists()
        assert not (tmp_path / f"{dump.name}.sha256").exists()
    for name in remaining:
        assert (tmp_path / f"{name}.sha256").exists()
    assert (tmp_path / "notes.txt").exists()
    assert (tmp_path / "brokerx-latest.dump").exists()


def test_prime_backup_metrics_reads_the_newest_backup_on_disk(tmp_path: Path) -> None:
    newest = at("2025-03-15T02:00:00")
    for when, size in ((newest - timedelta(days=1), 10), (newest, 1234)):
        (tmp_path / backup_filename(when)).write_bytes(b"x" * size)
    prime_backup_metrics(tmp_path)
    assert sample("brokerx_backup_last_success_timestamp_seconds") == newest.timestamp()
    assert sample("brokerx_backup_last_size_bytes") == 1234


async def test_worker_hooks_schedule_the_job_and_prime_the_gauges(tmp_path: Path) -> None:
    assert backup.FUNCTIONS == [nightly_backup]
    newest = at("2025-03-16T02:00:00")
    write_bytes(tmp_path / backup_filename(newest), b"x" * 77)
    for task in backup.BACKGROUND_TASKS:
        await task({"settings": FakeSettings(backup_dir=str(tmp_path), libpq_url="unused")})
    assert sample("brokerx_backup_last_success_timestamp_seconds") == newest.timestamp()
    assert sample("brokerx_backup_last_size_bytes") == 77


def test_pg_dump_command_keeps_the_password_off_the_command_line(tmp_path: Path) -> None:
    argv, env = pg_dump_command(
        "postgresql://brokerx:s%40cret@postgres:5432/brokerx?sslmode=disable", tmp_path / "f"
    )
    assert env["PGPASSWORD"] == "s@cret"
    assert all("s%40cret" not in arg and "s@cret" not in arg for arg in argv)
    assert "--dbname=postgresql://brokerx@postgres:5432/brokerx?sslmode=disable" in argv
    assert "--format=custom" in argv


def test_cron_expressions_translate_to_arq() -> None:
    assert arq_cron_kwargs("0 2 * * *") == {
        "minute": 0, "hour": 2, "day": None, "month": None, "weekday": None
    }  # fmt: skip
    assert arq_cron_kwargs("*/15 1-3 * * 0") == {
        "minute": {0, 15, 30, 45}, "hour": {1, 2, 3}, "day": None, "month": None,
        "weekday": 6,  # cron Sunday -> arq Sunday (Monday = 0)
    }  # fmt: skip
    assert arq_cron_kwargs("30 4 1,15 * 1-5")["weekday"] == {0, 1, 2, 3, 4}
    for bad in ("0 2 * *", "61 2 * * *", "0 2 * * mon", "*/0 * * * *"):
        with pytest.raises(ValueError):  # noqa: PT011
            arq_cron_kwargs(bad)
    job = backup_cron_job("0 2 * * *")
    assert job.name == "nightly_backup"
    assert job.coroutine is backup.nightly_backup
    assert job.unique is True
