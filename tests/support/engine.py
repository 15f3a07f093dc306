"""Running the matching service in tests: in-process (an asyncio task) or as a real
`python -m brokerx_matching` process that can be SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_matching.service import MatchingService
from brokerx_matching.settings import MatchingSettings
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

ROOT = Path(__file__).resolve().parents[2]


def matching_settings(servers: ServerUrls, database_url: str, **overrides: Any) -> MatchingSettings:
    """Settings for a matching service on the test servers (fast polling, quiet logs)."""
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "redis_url": servers.redis_url,
        "log_json": True,
        "log_level": "WARNING",
        "ops_port": 0,
        "consumer_name": f"test-{uuid.uuid4().hex[:8]}",
        "shard_poll_seconds": 0.2,
        "block_ms": 100,
        "housekeeping_seconds": 0.5,
    }
    values.update(overrides)
    return MatchingSettings(**values)


@contextlib.asynccontextmanager
async def running_matching(settings: MatchingSettings) -> AsyncIterator[MatchingService]:
    """The matching service as a task of the test's event loop, serving every shard."""
    service = MatchingService(settings)
    task = asyncio.create_task(service.serve(), name="matching-under-test")
    try:
        await eventually(
            _ready(service, task),
            lambda serving: serving == list(range(settings.matching_shards)),
            timeout=15,
            message="the matching service did not take every shard",
        )
        yield service
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


def _ready(service: MatchingService, task: asyncio.Task[None]) -> Any:
    async def probe() -> list[int]:
        if task.done():
            task.result()  # surface the crash
        return service.shards.serving_shards if service.started.is_set() else []

    return probe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MatchingProcess:
    """`python -m brokerx_matching` with its own environment."""

    def __init__(self, settings: MatchingSettings, name: str = "matching") -> None:
        self.port = free_port()
        self.name = name
        self.env = {
            **os.environ,
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "OPS_PORT": str(self.port),
            "MATCHING_SHARDS": str(settings.matching_shards),
            "SHARD_POLL_SECONDS": str(settings.shard_poll_seconds),
            "BLOCK_MS": str(settings.block_ms),
            "BATCH_SIZE": str(settings.batch_size),
            "HOUSEKEEPING_SECONDS": str(settings.housekeeping_seconds),
            "CONSUMER_NAME": f"{name}-{uuid.uuid4().hex[:6]}",
            "LOG_LEVEL": os.environ.get("MATCHING_TEST_LOG_LEVEL", "WARNING"),
            "LOG_JSON": "true",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/brokerx-{name}-{os.getpid()}-{self.port}.log")

    def start(self, *, profile: Path | None = None) -> MatchingProcess:
        """Start the process (under cProfile writing to `profile`, for benchmarks)."""
        self.env["CONSUMER_NAME"] = f"{self.name}-{uuid.uuid4().hex[:6]}"
        log = self.log_path.open("ab")
        profiling = ["-m", "cProfile", "-o", str(profile)] if profile else []
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, *profiling, "-m", "brokerx_matching"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all (the kernel closes its sockets)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, 15)
            self.kill()

    async def health(self) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=1.0) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/health")
            body: dict[str, Any] = response.json()
            return body
        except (httpx.HTTPError, ValueError):
            return None

    async def serving(self) -> list[int]:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited: see {self.log_path}")
        body = await self.health()
        return list(body["shards"]["serving"]) if body else []

    async def wait_serving(self, shards: int, timeout: float = 20.0) -> None:
        await eventually(
            self.serving,
            lambda serving: len(serving) == shards,
            timeout=timeout,
            message=f"{self.name} does not serve {shards} shards",
        )


async def settled(engine: AsyncEngine) -> tuple[int, int]:
    """(orders still pending_new, outbox rows left): both 0 once the engine caught up."""
    async with engine.connect() as conn:
        pending = (
            await conn.execute(
                text("SELECT count(*) FROM client_order WHERE status = 'pending_new'")
            )
        ).scalar_one()
        outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
    return int(pending), int(outbox)


async def wait_settled(engine: AsyncEngine, timeout: float = 30.0) -> None:
    """Wait until every order left `pending_new` and every command was consumed."""
    await eventually(
        lambda: settled(engine),
        lambda counts: counts == (0, 0),
        timeout=timeout,
        interval=0.05,
        message="orders or commands left unprocessed",
    )
