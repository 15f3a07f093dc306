"""Writing one backup: run `pg_dump -Fc` into a temporary file, then publish it.

The dump goes to a hidden `.partial` file (mode 0600: it holds every client's data).
`publish` fsyncs it, writes `<file>.sha256` atomically and only then renames the dump
into place, so a visible `.dump` is always whole and always has its checksum. The
password in the database URL reaches pg_dump through PGPASSWORD, never its argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from brokerx_worker.backup_retention import PARTIAL_SUFFIX, checksum_path

DEFAULT_DUMP_TIMEOUT_SECONDS = 3600.0


class BackupFailed(RuntimeError):
    """The dump did not complete; older backups are untouched."""


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


def start_partial(directory: Path, final: Path) -> Path:
    """Create the hidden temporary file a dump into `final` is written to."""
    directory.mkdir(parents=True, exist_ok=True)
    # mkstemp: mode 0600 (a dump holds every client's data), unique per attempt.
    fd, name = tempfile.mkstemp(dir=directory, prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    return Path(name)


def publish(partial: Path, final: Path) -> tuple[str, int]:
    """fsync, checksum, then rename into place; returns (sha256, size)."""
    _fsync(partial)
    digest = sha256_file(partial)
    size = partial.stat().st_size
    # Checksum first, then the dump: a visible .dump always has its checksum.
    _write_atomically(checksum_path(final), f"{digest}  {final.name}\n")
    os.replace(partial, final)
    _fsync(final.parent)
    return digest, size
