"""The worker's backup metrics follow backups taken by any process, without a restart.

`make backup` runs `python -m brokerx_worker.backup` as a process of its own (inside the
worker container); its success must clear BackupTooOld and its failure must raise
BackupFailed through the long-running worker's /metrics. The suite's real PostgreSQL
(`servers`: TEST_DATABASE_URL, or the embedded server) and pg_dump.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokerx_core.observability.ops_server import create_ops_app
from brokerx_worker import backup
from brokerx_worker.backup_retention import parse_backup_time
from brokerx_worker.backup_status import COLLECTOR, STATUS_FILE, read_status, record_failure

from .conftest import REPO_ROOT, PgServer, require_binary

BACKUP_SCRIPT = REPO_ROOT / "scripts/backup.sh"


class FakeSettings:
    def __init__(self, backup_dir: Path) -> None:
        self.backup_dir = str(backup_dir)


async def _admin(server: PgServer, statement: str) -> None:
    conn = await asyncpg.connect(server.url(), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def database(pg_server: PgServer) -> AsyncIterator[str]:
    for tool in ("pg_dump", "pg_restore"):
        require_binary(tool)
    name = f"brokerx_bm_{uuid.uuid4().hex[:10]}"
    await _admin(pg_server, f'CREATE DATABASE "{name}"')
    yield name
    await _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def worker_metrics() -> dict[str, float]:
    """The worker's /metrics (its ops app), as Prometheus would scrape it."""
    app = create_ops_app(lambda: None)  # type: ignore[arg-type,return-value]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("brokerx_backup_")
    }


def file_size(path: Path) -> int:  # blocking on purpose: the test waits for its files
    return path.stat().st_size


def make_backup(backup_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """`make backup`'s code path on this machine: scripts/backup.sh, a separate process."""
    env = {
        **os.environ,
        "BACKUP_MODE": "local",
        "DATABASE_URL": database_url,
        "BACKUP_DIR": str(backup_dir),
        "ENVIRONMENT": "test",
    }
    return subprocess.run(
        [str(BACKUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_make_backup_in_another_process_shows_in_the_running_workers_metrics(
    database: str, pg_server: PgServer, tmp_path: Path
) -> None:
    backups = tmp_path / "backups"
    # The worker starts (its background task) before any backup exists.
    for task in backup.BACKGROUND_TASKS:
        await task({"settings": FakeSettings(backups)})
    started = await worker_metrics()
    assert started["brokerx_backup_last_success_timestamp_seconds"] == 0
    assert started["brokerx_backup_failures_total"] == 0

    ok = make_backup(backups, pg_server.app_url(database))

    assert ok.returncode == 0, ok.stdout + ok.stderr
    taken = Path(json.loads(ok.stdout.strip().splitlines()[-1])["file"])
    taken_at = parse_backup_time(taken.name)
    assert taken_at is not None
    after_ok = await worker_metrics()  # same worker, no restart
    assert after_ok["brokerx_backup_last_success_timestamp_seconds"] == taken_at.timestamp()
    assert after_ok["brokerx_backup_last_size_bytes"] == file_size(taken)
    assert after_ok["brokerx_backup_failures_total"] == 0

    before_failure = time.time()
    failed = make_backup(backups, "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")

    assert failed.returncode == 1
    assert "backup failed" in failed.stderr
    after_failure = await worker_metrics()
    assert after_failure["brokerx_backup_failures_total"] == 1  # BackupFailed: increase > 0
    assert after_failure["brokerx_backup_last_failure_timestamp_seconds"] >= before_failure - 1
    # The good backup is still the newest one: BackupTooOld stays quiet.
    assert after_failure["brokerx_backup_last_success_timestamp_seconds"] == taken_at.timestamp()
    assert "pg_dump exited" in read_status(backups).last_error


def test_failures_of_several_processes_add_up_in_the_status_file(tmp_path: Path) -> None:
    for attempt in range(3):
        record_failure(tmp_path, at=1000.0 + attempt, error=f"attempt {attempt}")
    status = read_status(tmp_path)
    assert (status.failures, status.last_failure, status.last_error) == (3, 1002.0, "attempt 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATUS_FILE]  # no temp file left


def test_a_missing_or_garbled_status_file_reads_as_no_failure(tmp_path: Path) -> None:
    assert read_status(tmp_path / "absent").failures == 0
    (tmp_path / STATUS_FILE).write_text("{not json")
    assert read_status(tmp_path).failures == 0
    record_failure(tmp_path, at=5.0, error="x")  # starts counting again
    assert read_status(tmp_path).failures == 1


async def test_a_failure_that_cannot_be_written_is_still_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Restored afterwards, so other tests read the directory's count alone.
    monkeypatch.setattr(COLLECTOR, "unrecorded_failures", 0)
    monkeypatch.setattr(COLLECTOR, "unrecorded_last_failure", 0.0)
    broken = tmp_path / "not-a-directory"  # the volume is gone or unwritable
    broken.write_text("")
    backup.prime_backup_metrics(broken)
    before = (await worker_metrics())["brokerx_backup_failures_total"]
    record_failure(broken, at=time.time(), error="disk full")
    metrics = await worker_metrics()
    assert metrics["brokerx_backup_failures_total"] == before + 1
    assert metrics["brokerx_backup_last_failure_timestamp_seconds"] > 0
