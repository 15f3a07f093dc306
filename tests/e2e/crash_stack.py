"""The api and the worker as real processes for crash tests, on the test database and a
Redis server of the test's own.

Why a private Redis: the crash tests hold the window between a commit and its XADD
open with `CLIENT PAUSE WRITE`, which pauses the whole server; on the shared test
server it would stall every other suite using it. The matching service runs as
`tests.support.engine.MatchingProcess` pointed at the same Redis.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.observability.multiprocess import MULTIPROC_ENV
from brokerx_core.streams import order_stream
from brokerx_devstack.binaries import preference
from brokerx_devstack.procs import free_port
from brokerx_devstack.redisserver import ensure_redis, stop_redis
from tests.e2e.conftest import alive
from tests.support import orders_sql
from tests.support.polling import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh redis-server that only this test uses; stopped at teardown."""
    data_dir = tmp_path / "redis-server"
    running = ensure_redis(data_dir, preference())
    yield running.url
    stop_redis(data_dir)


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def writes_paused(redis: Redis, *, limit_ms: int = 30_000) -> AsyncIterator[None]:
    """Every client's write commands (XADD, XREADGROUP, SET...) wait until the block
    ends (or `limit_ms`, should the test die without unpausing)."""
    await redis.client_pause(limit_ms, all=False)  # all=False: CLIENT PAUSE ... WRITE
    try:
        yield
    finally:
        await redis.client_unpause()


def service_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """What every service gets: the test servers, quiet JSON logs, no market maker."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != MULTIPROC_ENV and not key.startswith("SESSION_")
    }
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MATCHING_SHARDS": "4",
            "MARKET_MAKER_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class Service:
    """`python -m <module>` in a session of its own (so cleanup can kill its group)."""

    name: str
    module: str
    env: dict[str, str]
    port: int
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Service:
        self.starts += 1
        log = self.log_dir / f"{self.name}-{self.starts}.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
                [sys.executable, "-m", self.module],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "\n".join(
            path.read_text(encoding="utf-8", errors="replace")[-4000:]
            for path in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )

    def kill(self) -> None:
        """SIGKILL to the whole group: no cleanup, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def workers(self) -> list[psutil.Process]:
        """The api's uvicorn worker processes (multiprocessing spawn children)."""
        assert self.process is not None
        found = []
        for child in psutil.Process(self.process.pid).children():
            with contextlib.suppress(psutil.Error):
                if alive(child) and "spawn_main" in " ".join(child.cmdline()):
                    found.append(child)
        return found

    async def get(self, path: str) -> httpx.Response | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.output()}")
        try:
            async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
                return await client.get(f"{self.url}{path}")
        except httpx.HTTPError:
            return None

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        async def status() -> int | None:
            response = await self.get("/health")
            return None if response is None else response.status_code

        await eventually(
            status,
            lambda code: code == 200,
            timeout=timeout,
            interval=0.2,
            message=f"{self.name} /health",
        )


def api_service(database_url: str, redis_url: str, log_dir: Path, *, workers: int) -> Service:
    port = free_port()
    env = service_env(
        database_url, redis_url, API_PORT=str(port), API_WORKERS=str(workers), DB_POOL_SIZE="4"
    )
    return Service("api", "brokerx_api", env, port, log_dir)


def worker_service(database_url: str, redis_url: str, log_dir: Path, smtp_port: int) -> Service:
    """The worker with a brisk outbox relay (rows older than 1 s, every 0.2 s)."""
    port = free_port()
    env = service_env(
        database_url,
        redis_url,
        OPS_PORT=str(port),
        SMTP_PORT=str(smtp_port),
        OUTBOX_RELAY_INTERVAL_SECONDS="0.2",
        OUTBOX_REPUBLISH_AFTER_SECONDS="1.0",
    )
    return Service("worker", "brokerx_worker", env, port, log_dir)


@dataclass(frozen=True)
class HttpTrader:
    account_id: uuid.UUID
    token: str = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_http_traders(
    engine: AsyncEngine, count: int, *, shares: dict[str, int], token_settings: Any
) -> list[HttpTrader]:
    """Funded clients with a login session and a Bearer token the api processes accept
    (`token_settings`: ApiSettings with the processes' JWT configuration)."""
    from brokerx_api.auth.deps import token_service_from

    tokens = token_service_from(token_settings)
    traders = []
    async with engine.begin() as conn:
        for n in range(count):
            funded = await orders_sql.create_trader(
                conn, cash=Decimal(5_000_000), shares=shares, name=f"http{n}"
            )
            session_id = uuid.uuid4()
            await conn.execute(
                text(
                    "INSERT INTO auth_session (id, client_id, expires_at)"
                    " VALUES (:id, :client, :expires)"
                ),
                {
                    "id": session_id,
                    "client": funded.client_id,
                    "expires": datetime.now(UTC) + timedelta(days=1),
                },
            )
            token = tokens.issue_access(funded.client_id, session_id)
            traders.append(HttpTrader(funded.account_id, token))
    return traders


async def backend_states(engine: AsyncEngine, application: str) -> list[tuple[str, str | None]]:
    """(state, wait_event_type) of the PostgreSQL sessions of a service (application_name)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT state, wait_event_type FROM pg_stat_activity"
                " WHERE application_name = :app AND datname = current_database()"
            ),
            {"app": application},
        )
        return [(str(state), wait) for state, wait in rows.all()]


async def outbox_ids_on_streams(redis: Redis) -> set[int]:
    found = set()
    for shard in range(4):
        for _entry, fields in await redis.xrange(order_stream(shard)):
            found.add(json.loads(fields[b"data"])["outbox_id"])
    return found


def redis_addresses(processes: list[psutil.Process], redis: Redis) -> set[str]:
    """`ip:port` of each connection these processes hold to the Redis server."""
    port = int(redis.connection_pool.connection_kwargs["port"])
    return {
        f"{conn.laddr.ip}:{conn.laddr.port}"
        for process in processes
        for conn in process.net_connections("tcp")
        if conn.raddr and conn.raddr.port == port
    }


async def wait_disconnected(redis: Redis, addresses: set[str]) -> None:
    """Until the Redis server has dropped these client connections (`ip:port`): then
    whatever they had sent and Redis had not run yet (paused writes) is gone with them."""

    async def connected() -> set[str]:
        return {client["addr"] for client in await redis.client_list()} & addresses

    await eventually(connected, lambda left: not left, message="dead clients dropped")
