"""Nightly PostgreSQL backups: `pg_dump -Fc` into BACKUP_DIR, a checksum, retention.

`nightly_backup` is the arq job (scheduled by `backup_cron_job` from BACKUP_CRON);
`python -m brokerx_worker.backup` runs the same code once (`scripts/backup.sh`,
`make backup`). A backup is `brokerx-YYYYmmddTHHMMSSZ.dump` (the UTC time the dump
started) plus `<file>.sha256` in `sha256sum` format, which `scripts/restore.sh`
verifies before restoring.

A dump is written to a hidden temporary file and renamed into place only once it is
complete and its checksum is on disk, so a `.dump` file is always a whole backup. A
failed dump removes its own temporary file and never touches older backups.

Metrics come from the backups directory itself, read at every scrape
(`backup_status`): a backup or a failure of `make backup`, a process of its own, shows
in the worker's /metrics without a restart.

This module is the job: settings, schedule and command line. File names and retention
live in `backup_retention`, pg_dump and the files it writes in `backup_files`, the
metrics in `backup_status`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from arq import cron
from arq.cron import CronJob

from brokerx_core.observability.logging import get_logger
from brokerx_worker.backup_files import (
    DEFAULT_DUMP_TIMEOUT_SECONDS,
    BackupFailed,
    publish,
    run_pg_dump,
    start_partial,
)
from brokerx_worker.backup_retention import apply_retention, backup_filename
from brokerx_worker.backup_status import record_failure, watch
from brokerx_worker.cron import arq_cron_kwargs

log = get_logger(__name__)


class BackupSettings(Protocol):
    """What the backup job needs from the worker settings."""

    backup_dir: str
    backup_keep_daily: int
    backup_keep_weekly: int

    @property
    def libpq_url(self) -> str: ...


@dataclass(frozen=True)
class BackupResult:
    """One completed backup and what retention removed after it."""

    path: Path
    taken_at: datetime
    size_bytes: int
    sha256: str
    deleted: tuple[Path, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (arq keeps it as the job result)."""
        return {
            "file": str(self.path),
            "taken_at": self.taken_at.isoformat(),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "deleted": [str(path) for path in self.deleted],
        }


# --- the job ---------------------------------------------------------------------------


async def create_backup(
    settings: BackupSettings,
    *,
    now: datetime | None = None,
    time_limit: float = DEFAULT_DUMP_TIMEOUT_SECONDS,
) -> BackupResult:
    """Dump the database into BACKUP_DIR, checksum it, then apply retention.

    On failure: the partial file is removed, older backups stay, the failure is
    recorded in the directory's status file and BackupFailed (or the cancellation)
    propagates.
    """
    directory = Path(settings.backup_dir)
    watch(directory)
    taken_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    final = directory / backup_filename(taken_at)
    partial: Path | None = None
    started = time.monotonic()
    try:
        partial = await asyncio.to_thread(start_partial, directory, final)
        await run_pg_dump(settings.libpq_url, partial, time_limit=time_limit)
        digest, size = await asyncio.to_thread(publish, partial, final)
        partial = None
    except BaseException as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        error = str(exc) or type(exc).__name__
        # In place, not in a thread: this also runs while the job is being cancelled.
        record_failure(directory, at=time.time(), error=error)
        log.error("backup_failed", file=str(final), error=error)
        if isinstance(exc, OSError):
            raise BackupFailed(f"backup I/O error: {exc}") from exc
        raise

    deleted = await asyncio.to_thread(
        apply_retention,
        directory,
        now=taken_at,
        keep_daily=settings.backup_keep_daily,
        keep_weekly=settings.backup_keep_weekly,
    )
    log.info(
        "backup_completed",
        file=str(final),
        size_bytes=size,
        seconds=round(time.monotonic() - started, 3),
        deleted=[path.name for path in deleted],
    )
    return BackupResult(final, taken_at, size, digest, tuple(deleted))


async def nightly_backup(ctx: dict[str, Any]) -> dict[str, Any]:
    """arq job: one backup with retention. Safe to run twice (it makes a second file)."""
    result = await create_backup(ctx["settings"])
    return result.as_dict()


def prime_backup_metrics(backup_dir: str | Path) -> None:
    """Export the backups of `backup_dir` (call at worker start-up).

    From then on every scrape reads the directory: the newest backup and the recorded
    failures, whichever process wrote them.
    """
    watch(backup_dir)


# --- schedule --------------------------------------------------------------------------


def backup_cron_job(cron_expression: str = "0 2 * * *") -> CronJob:
    """The arq cron job running `nightly_backup` on BACKUP_CRON (unique across workers)."""
    return cron(
        nightly_backup,
        name="nightly_backup",
        unique=True,
        timeout=DEFAULT_DUMP_TIMEOUT_SECONDS + 300,
        **arq_cron_kwargs(cron_expression),  # type: ignore[arg-type]
    )


async def load_backup_metrics(ctx: dict[str, Any]) -> None:
    """Worker background task: export the metrics of BACKUP_DIR, read at every scrape."""
    await asyncio.to_thread(prime_backup_metrics, ctx["settings"].backup_dir)


# Hooks read by brokerx_worker.registry. The cron entry depends on BACKUP_CRON, so the
# worker adds `backup_cron_job(settings.backup_cron)` to its cron jobs itself.
FUNCTIONS: list[Any] = [nightly_backup]
CRON_JOBS: list[CronJob] = []
BACKGROUND_TASKS: list[Any] = [load_backup_metrics]


# --- command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m brokerx_worker.backup [--dir DIR]`: take one backup now, print it as JSON."""
    from brokerx_core.observability.logging import configure_logging
    from brokerx_worker.settings import WorkerSettings

    parser = argparse.ArgumentParser(
        prog="python -m brokerx_worker.backup", description="Take one database backup now."
    )
    parser.add_argument("--dir", help="backup directory (default: BACKUP_DIR)")
    args = parser.parse_args(argv)
    overrides = {"backup_dir": args.dir} if args.dir else {}
    settings = WorkerSettings(**overrides)
    configure_logging("backup", settings.log_level, json=settings.log_json)
    try:
        result = asyncio.run(create_backup(settings))
    except BackupFailed as exc:
        sys.stderr.write(f"backup failed: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result.as_dict()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
