"""Nightly PostgreSQL backups: `pg_dump -Fc` into BACKUP_DIR, a checksum, retention.

`nightly_backup` is the arq job (scheduled by `backup_cron_job` from BACKUP_CRON);
`python -m brokerx_worker.backup` runs the same code once (`scripts/backup.sh`,
`make backup`). A backup is `brokerx-YYYYmmddTHHMMSSZ.dump` (the UTC time the dump
started) plus `<file>.sha256` in `sha256sum` format, which `scripts/restore.sh`
verifies before restoring.

A dump is written to a hidden temporary file and renamed into place only once it is
complete and its checksum is on disk, so a `.dump` file is always a whole backup. A
failed dump removes its own temporary file and never touches older backups.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from arq import cron
from arq.cron import CronJob
from prometheus_client import Counter, Gauge

from brokerx_core.observability.logging import get_logger
from brokerx_worker.cron import arq_cron_kwargs

log = get_logger(__name__)

BACKUP_PREFIX = "brokerx-"
BACKUP_SUFFIX = ".dump"
CHECKSUM_SUFFIX = ".sha256"
PARTIAL_SUFFIX = ".partial"
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_BACKUP_NAME = re.compile(r"^brokerx-(\d{8}T\d{6}Z)\.dump$")
# A temporary file older than this belongs to a dump that died (SIGKILL, power loss).
_STALE_PARTIAL_SECONDS = 24 * 3600
DEFAULT_DUMP_TIMEOUT_SECONDS = 3600.0

BACKUP_LAST_SUCCESS = Gauge(
    "brokerx_backup_last_success_timestamp_seconds",
    "Unix time at which the newest successful database backup was taken",
)
BACKUP_LAST_SIZE = Gauge(
    "brokerx_backup_last_size_bytes",
    "Size in bytes of the newest successful database backup",
)
BACKUP_FAILURES = Counter(
    "brokerx_backup_failures",
    "Database backups that failed (pg_dump error, timeout, I/O error)",
)


class BackupSettings(Protocol):
    """What the backup job needs from the worker settings."""

    backup_dir: str
    backup_keep_daily: int
    backup_keep_weekly: int

    @property
    def libpq_url(self) -> str: ...


class BackupFailed(RuntimeError):
    """The dump did not complete; older backups are untouched."""


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


# --- names and retention (pure) ----------------------------------------------------


def backup_filename(taken_at: datetime) -> str:
    """`brokerx-YYYYmmddTHHMMSSZ.dump` for an aware datetime."""
    return f"{BACKUP_PREFIX}{taken_at.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)}{BACKUP_SUFFIX}"


def parse_backup_time(name: str) -> datetime | None:
    """The UTC time encoded in a backup file name, None for any other name."""
    match = _BACKUP_NAME.match(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), _TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def checksum_path(backup: Path) -> Path:
    """`<file>.sha256` next to a backup."""
    return backup.with_name(backup.name + CHECKSUM_SUFFIX)


def select_expired(
    backups: Iterable[tuple[Path, datetime]],
    *,
    now: datetime,
    keep_daily: int = 7,
    keep_weekly: int = 4,
) -> list[Path]:
    """The backups retention deletes, oldest first.

    Kept: the newest backup of each of the last `keep_daily` calendar days (UTC, today
    included) and the newest of each of the last `keep_weekly` ISO weeks (this week
    included). Also always kept, whatever the clock says: the newest backup overall, and
    any backup dated after `now`.
    """
    entries = sorted(backups, key=lambda item: (item[1], item[0].name))
    if not entries:
        return []
    now = now.astimezone(UTC)
    today = now.date()
    kept_days = {today - timedelta(days=offset) for offset in range(max(keep_daily, 0))}
    kept_weeks = {
        _iso_week(today - timedelta(weeks=offset)) for offset in range(max(keep_weekly, 0))
    }

    newest_of_day: dict[date, Path] = {}
    newest_of_week: dict[tuple[int, int], Path] = {}
    keep: set[Path] = {entries[-1][0]}
    for path, taken_at in entries:  # ascending, so later entries overwrite earlier ones
        taken_at = taken_at.astimezone(UTC)
        if taken_at > now:
            keep.add(path)
            continue
        day = taken_at.date()
        if day in kept_days:
            newest_of_day[day] = path
        week = _iso_week(day)
        if week in kept_weeks:
            newest_of_week[week] = path
    keep.update(newest_of_day.values())
    keep.update(newest_of_week.values())
    return [path for path, _ in entries if path not in keep]


def _iso_week(day: date) -> tuple[int, int]:
    iso = day.isocalendar()
    return iso.year, iso.week


def list_backups(directory: Path) -> list[tuple[Path, datetime]]:
    """Completed backups in `directory` with their times, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        taken_at = parse_backup_time(entry.name)
        if taken_at is not None and entry.is_file():
            found.append((entry, taken_at))
    return sorted(found, key=lambda item: (item[1], item[0].name))


def apply_retention(
    directory: Path, *, now: datetime, keep_daily: int, keep_weekly: int
) -> list[Path]:
    """Delete expired backups (with their checksums) and stale leftovers; returns deleted dumps."""
    expired = select_expired(
        list_backups(directory), now=now, keep_daily=keep_daily, keep_weekly=keep_weekly
    )
    for backup in expired:
        # Checksum first: a dump left without one is refused by restore, never misread.
        checksum_path(backup).unlink(missing_ok=True)
        backup.unlink(missing_ok=True)
    _remove_leftovers(directory, now)
    return expired


def _remove_leftovers(directory: Path, now: datetime) -> None:
    """Checksums whose dump is gone, and temporary files of dumps that died long ago."""
    for entry in directory.iterdir():
        name = entry.name
        if name.endswith(CHECKSUM_SUFFIX):
            dump = entry.with_name(name.removesuffix(CHECKSUM_SUFFIX))
            if parse_backup_time(dump.name) is not None and not dump.exists():
                with contextlib.suppress(FileNotFoundError):
                    if now.timestamp() - entry.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                        entry.unlink()
        elif name.startswith("." + BACKUP_PREFIX) and name.endswith(PARTIAL_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                if now.timestamp() - entry.stat().st_mtime > _STALE_PARTIAL_SECONDS:
                    entry.unlink()


# --- pg_dump -------------------------------------------------------------------------


def pg_dump_command(libpq_url: str, output: Path) -> tuple[list[str], dict[str, str]]:
    """The pg_dump argv and extra environment for one custom-format dump.

    The password moves from the URL to PGPASSWORD so it never shows in `ps`.
    """
    parts = urlsplit(libpq_url)
    extra_env: dict[str, str] = {"PGCONNECT_TIMEOUT": "10"}
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            extra_env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{hostport}" if user else hostport
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    argv = [
        "pg_dump",
        "--format=custom",
        "--no-password",
        "--lock-wait-timeout=120s",
        f"--file={output}",
        f"--dbname={url}",
    ]
    return argv, extra_env


async def run_pg_dump(
    libpq_url: str, output: Path, *, time_limit: float = DEFAULT_DUMP_TIMEOUT_SECONDS
) -> None:
    """Run pg_dump into `output`; BackupFailed with its stderr when it does not succeed."""
    argv, extra_env = pg_dump_command(libpq_url, output)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **extra_env},
        )
    except FileNotFoundError as exc:
        raise BackupFailed("pg_dump is not installed (postgresql-client)") from exc
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except BaseException:
        # Timeout or cancellation (arq job timeout, shutdown): never leave pg_dump behind.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        message = stderr.decode("utf-8", "replace").strip()
        raise BackupFailed(f"pg_dump exited with {process.returncode}: {message[-2000:]}")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the job ---------------------------------------------------------------------------


def _start_partial(directory: Path, final: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    # mkstemp: mode 0600 (a dump holds every client's data), unique per attempt.
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    return Path(name)


def _publish(partial: Path, final: Path) -> tuple[str, int]:
    """fsync, checksum, then rename into place; returns (sha256, size)."""
    _fsync(partial)
    digest = sha256_file(partial)
    size = partial.stat().st_size
    # Checksum first, then the dump: a visible .dump always has its checksum.
    _write_atomically(checksum_path(final), f"{digest}  {final.name}\n")
    os.replace(partial, final)
    _fsync(final.parent)
    return digest, size


async def create_backup(
    settings: BackupSettings,
    *,
    now: datetime | None = None,
    time_limit: float = DEFAULT_DUMP_TIMEOUT_SECONDS,
) -> BackupResult:
    """Dump the database into BACKUP_DIR, checksum it, then apply retention.

    On failure: the partial file is removed, older backups stay, the failure counter
    goes up and BackupFailed (or the cancellation) propagates.
    """
    directory = Path(settings.backup_dir)
    taken_at = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    final = directory / backup_filename(taken_at)
    partial: Path | None = None
    started = time.monotonic()
    try:
        partial = await asyncio.to_thread(_start_partial, directory, final)
        await run_pg_dump(settings.libpq_url, partial, time_limit=time_limit)
        digest, size = await asyncio.to_thread(_publish, partial, final)
        partial = None
    except BaseException as exc:
        if partial is not None:
            partial.unlink(missing_ok=True)
        BACKUP_FAILURES.inc()
        log.error("backup_failed", file=str(final), error=str(exc) or type(exc).__name__)
        if isinstance(exc, OSError):
            raise BackupFailed(f"backup I/O error: {exc}") from exc
        raise

    BACKUP_LAST_SUCCESS.set(taken_at.timestamp())
    BACKUP_LAST_SIZE.set(size)
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
    """Set the gauges from the newest backup on disk (call at worker start-up).

    Without it a restarted worker would report "no backup since 1970" until 02:00.
    """
    backups = list_backups(Path(backup_dir))
    if not backups:
        return
    newest, taken_at = backups[-1]
    with contextlib.suppress(FileNotFoundError):
        BACKUP_LAST_SIZE.set(newest.stat().st_size)
        BACKUP_LAST_SUCCESS.set(taken_at.timestamp())


# --- schedule --------------------------------------------------------------------------


# name, lowest, highest (cron order; weekday 7 is Sunday again)
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
    """Worker background task: set the gauges from the backups on disk, once, at start."""
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
