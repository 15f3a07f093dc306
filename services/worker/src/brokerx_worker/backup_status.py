"""The backup metrics, read from the backups directory at every scrape.

Backups are taken by more than one process: the worker's nightly job, and
`make backup` (`scripts/backup.sh`: `docker compose exec worker python -m
brokerx_worker.backup`, a process of its own whose metrics nobody scrapes). So the
worker does not export what it remembers but what the directory says, each time
Prometheus asks:

- the newest completed backup (`brokerx-YYYYmmddTHHMMSSZ.dump`): its time and size;
- `.backup-status.json`, where every process records its failed attempts (a running
  count and the time and error of the last one), under an exclusive lock on the
  directory and replaced atomically.

A failure that cannot be recorded in the file (full disk, read-only volume) is still
counted by the process it happened in, so the worker's own failures always show.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from brokerx_core.observability.logging import get_logger
from brokerx_worker.backup_retention import list_backups

log = get_logger(__name__)

STATUS_FILE = ".backup-status.json"


@dataclass(frozen=True)
class BackupStatus:
    """What the backups directory says right now."""

    last_success: float = 0.0
    last_size: int = 0
    failures: int = 0
    last_failure: float = 0.0
    last_error: str = ""


def _read_file(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((directory / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_status(directory: Path) -> BackupStatus:
    """The newest backup on disk and the recorded failures (zeros when there are none)."""
    last_success, last_size = 0.0, 0
    for path, taken_at in reversed(list_backups(directory)):
        try:
            last_size = path.stat().st_size
        except FileNotFoundError:  # removed by retention since the listing
            continue
        last_success = taken_at.timestamp()
        break
    recorded = _read_file(directory)
    try:
        failures = max(int(recorded.get("failures", 0)), 0)
        last_failure = float(recorded.get("last_failure", 0.0))
    except (TypeError, ValueError):
        failures, last_failure = 0, 0.0
    return BackupStatus(
        last_success, last_size, failures, last_failure, str(recorded.get("last_error", ""))
    )


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def record_failure(directory: Path, *, at: float, error: str) -> None:
    """Count one failed attempt in the directory's status file (any process)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _directory_lock(directory):
            recorded = _read_file(directory)
            try:
                failures = max(int(recorded.get("failures", 0)), 0)
            except (TypeError, ValueError):
                failures = 0
            status = {"failures": failures + 1, "last_failure": at, "last_error": error[-500:]}
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{STATUS_FILE}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as stream:
                    json.dump(status, stream)
                os.replace(tmp, directory / STATUS_FILE)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
    except OSError as exc:
        COLLECTOR.unrecorded_failures += 1
        COLLECTOR.unrecorded_last_failure = at
        log.error("backup_failure_not_recorded", directory=str(directory), error=str(exc))


class BackupCollector(Collector):
    """Exports the backup metrics of the watched directory, read at collection time."""

    def __init__(self) -> None:
        self.directory: Path | None = None
        self.unrecorded_failures = 0
        self.unrecorded_last_failure = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = read_status(self.directory) if self.directory is not None else BackupStatus()
        yield GaugeMetricFamily(
            "brokerx_backup_last_success_timestamp_seconds",
            "Unix time at which the newest successful database backup was taken",
            value=status.last_success,
        )
        yield GaugeMetricFamily(
            "brokerx_backup_last_size_bytes",
            "Size in bytes of the newest successful database backup",
            value=status.last_size,
        )
        yield CounterMetricFamily(
            "brokerx_backup_failures",
            "Database backups that failed (pg_dump error, timeout, I/O error), by any process",
            value=status.failures + self.unrecorded_failures,
        )
        yield GaugeMetricFamily(
            "brokerx_backup_last_failure_timestamp_seconds",
            "Unix time of the last failed database backup (0: none recorded)",
            value=max(status.last_failure, self.unrecorded_last_failure),
        )


COLLECTOR = BackupCollector()
REGISTRY.register(COLLECTOR)


def watch(directory: str | Path) -> None:
    """Export the backups of `directory` from now on (the worker's BACKUP_DIR)."""
    COLLECTOR.directory = Path(directory)
