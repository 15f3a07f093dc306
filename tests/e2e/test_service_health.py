"""The matching service and the worker, as real processes, report their health truthfully:
200 with every check true while PostgreSQL and Redis answer, 503 with `redis: false`
once their Redis is gone (a private Redis the test kills), and 200 again from the same
process when Redis is back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_devstack.binaries import find_redis, preference
from brokerx_devstack.procs import free_port
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e]

OUTAGE_SECONDS = 3.0


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    """A redis-server of our own, in the foreground, so the test can kill it."""
    binary = find_redis(preference()).path
    return subprocess.Popen(
        [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[list[Any]]:
    """[process, port]; the test may replace the process (a Redis restart)."""
    holder: list[Any] = [None, free_port()]
    holder[0] = start_redis(holder[1], tmp_path)
    yield holder
    if holder[0].poll() is None:
        holder[0].kill()
        holder[0].wait(10)


def start_service(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        try:
            response = await client.get(f"http://127.0.0.1:{port}/health")
        except httpx.HTTPError:
            return 0, {}
        return response.status_code, response.json()


@pytest.mark.parametrize("module", ["brokerx_matching", "brokerx_worker"])
async def test_health_turns_503_with_redis_false_when_redis_dies(
    module: str,
    database_url: str,
    engine: AsyncEngine,
    private_redis: list[Any],
    tmp_path: Path,
) -> None:
    redis_process, redis_port = private_redis
    ops_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "OPS_PORT": str(ops_port),
        "LOG_LEVEL": "WARNING",
        "MATCHING_SHARDS": "1",
    }
    service = start_service(module, env, tmp_path / "service.log")
    try:
        status, body = await eventually(
            lambda: health(ops_port),
            lambda result: result[0] == 200,
            timeout=30,
            interval=0.2,
            message=f"{module} healthy",
        )
        assert body["checks"]["database"] is True
        assert body["checks"]["redis"] is True
        async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
            metrics = await client.get(f"http://127.0.0.1:{ops_port}/metrics")
        assert "brokerx_" in metrics.text

        redis_process.kill()
        redis_process.wait(10)
        status, body = await eventually(
            lambda: health(ops_port),
            lambda result: result[0] == 503,
            timeout=30,
            interval=0.2,
            message=f"{module} reports Redis down",
        )
        assert body["checks"]["redis"] is False
        assert body["checks"]["database"] is True

        # The outage lasts a few seconds: long enough for every loop of the service
        # (arq's poll, stream readers) to meet the dead connection.
        await asyncio.sleep(OUTAGE_SECONDS)
        # Redis comes back on the same port: the same process is healthy again.
        private_redis[0] = start_redis(redis_port, tmp_path)
        await eventually(
            lambda: health(ops_port),
            lambda result: result[0] == 200,
            timeout=30,
            interval=0.2,
            message=f"{module} healthy again after Redis restarted",
        )
        assert service.poll() is None, "the service must survive a Redis outage"
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(15)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(10)
