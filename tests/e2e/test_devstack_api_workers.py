"""`make run` with several api workers: the launcher starts the api as a uvicorn master
with N workers in Prometheus multiprocess mode (its own directory, never inherited by
matching or the worker), `/metrics` covers every api worker, and Ctrl-C leaves no
process behind, workers included."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.observability.multiprocess import MULTIPROC_ENV
from tests.e2e.conftest import Launcher, alive
from tests.support.metrics import samples
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
POOL_SIZE = 3


async def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [proc for proc in procs if alive(proc)]


def api_workers(master: psutil.Process) -> list[psutil.Process]:
    return [
        child
        for child in master.children()
        if alive(child) and "spawn_main" in " ".join(child.cmdline())
    ]


async def test_api_workers_flag_runs_several_workers_and_ctrl_c_stops_them_all(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    redis: Redis,
    tmp_path: Path,
) -> None:
    launcher = Launcher(tmp_path / "data", tmp_path / "launcher.log")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": str(POOL_SIZE),
        # A directory of the developer's shell: no service may write there.
        MULTIPROC_ENV: str(tmp_path / "elsewhere"),
    }
    launcher.start(env, "--no-market-maker", "--api-workers", str(WORKERS))
    try:
        await launcher.wait_healthy(timeout=90)

        async def output() -> str:
            return launcher.output()

        banner = await eventually(output, lambda text: "BrokerX is running" in text, timeout=10)
        assert f"{WORKERS} api worker processes" in banner
        services = {
            name: psutil.Process(record["pid"])
            for name, record in launcher.state()["services"].items()
        }
        workers = api_workers(services["api"])
        assert len(workers) == WORKERS
        metrics_dir = launcher.data_dir / "api-metrics"
        for proc in [services["api"], *workers]:
            assert proc.environ()[MULTIPROC_ENV] == str(metrics_dir)
            assert proc.environ()["API_WORKERS"] == str(WORKERS)
        for name in ("matching", "worker"):
            assert MULTIPROC_ENV not in services[name].environ(), name
        assert not (tmp_path / "elsewhere").exists()

        async def pool_size() -> list[float]:
            async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
                response = await client.get(launcher.url("api", "/metrics"))
            return samples(response.text, "brokerx_db_pool_connections", state="size")

        await eventually(
            pool_size,
            lambda found: found == [WORKERS * POOL_SIZE],
            timeout=20,
            message="both api workers' pools in /metrics",
        )

        launcher_proc = psutil.Process(launcher.pid)
        started = [launcher_proc, *launcher_proc.children(recursive=True)]
        assert await launcher.interrupt() == 0, launcher.output()
        assert await running(started) == []
    finally:
        launcher.kill()
