"""Reading `--version` banners of PostgreSQL and Redis binaries (pure functions)."""

from __future__ import annotations

import re

Version = tuple[int, ...]

MIN_POSTGRES: Version = (14,)
MIN_REDIS: Version = (6, 2)

# "initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", "postgres (PostgreSQL) 17beta1"
_POSTGRES = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=..."
_REDIS = re.compile(r"\bv=(\d+)\.(\d+)(?:\.(\d+))?")


def _numbers(match: re.Match[str] | None) -> Version | None:
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def parse_postgres_version(banner: str) -> Version | None:
    """(major, minor) from a PostgreSQL tool's `--version` output, None if unrecognised."""
    return _numbers(_POSTGRES.search(banner))


def parse_redis_version(banner: str) -> Version | None:
    """(major, minor, patch) from `redis-server --version`, None if unrecognised."""
    return _numbers(_REDIS.search(banner))


def at_least(version: Version | None, minimum: Version) -> bool:
    """True when `version` is known and not older than `minimum`."""
    return version is not None and version >= minimum


def render(version: Version | None) -> str:
    """ "15.20" for display; "unknown" when the banner could not be read."""
    return ".".join(str(part) for part in version) if version else "unknown"
