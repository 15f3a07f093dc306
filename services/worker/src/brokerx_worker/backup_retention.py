"""Names of backup files and the retention policy that prunes them.

A backup is `brokerx-YYYYmmddTHHMMSSZ.dump` (the UTC time the dump started) with
`<file>.sha256` next to it; a dump being written is a hidden `.<file>.<random>.partial`.
Retention keeps the newest backup of each of the last days and ISO weeks, and always the
newest one overall; it also clears checksums and temporary files left by dumps that died.
Everything here but `list_backups`, `apply_retention` and `_remove_leftovers` is pure.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

BACKUP_PREFIX = "brokerx-"
BACKUP_SUFFIX = ".dump"
CHECKSUM_SUFFIX = ".sha256"
PARTIAL_SUFFIX = ".partial"
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_BACKUP_NAME = re.compile(r"^brokerx-(\d{8}T\d{6}Z)\.dump$")
# A temporary file older than this belongs to a dump that died (SIGKILL, power loss).
_STALE_PARTIAL_SECONDS = 24 * 3600


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
