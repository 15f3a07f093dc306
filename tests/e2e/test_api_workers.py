"""The api with API_WORKERS=2 as a real process tree (a uvicorn master and two workers)
on the test PostgreSQL and Redis: both workers serve, `/metrics` adds them up (whichever
worker answers), a dead worker is replaced and drops out of the gauges while its counts
stay, and no way of stopping the master leaves a worker behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from brokerx_core.observability.multiprocess import MULTIPROC_ENV, live_gauge_pids
from brokerx_devstack.procs import free_port, port_is_free
from tests.e2e.conftest import alive
from tests.support.metrics import counter_of_pid, samples, total
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
POOL_SIZE = 3
REQUESTS = "http_requests_total"
MAX_REQUESTS = 4000


@dataclass
class ApiServer:
    """`python -m brokerx_api` in a session of its own (so cleanup can kill its group)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def master(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def workers(self) -> list[psutil.Process]:
        """The uvicorn workers (not multiprocessing's resource tracker)."""
        found = []
        for child in self.master().children():
            with contextlib.suppress(psutil.Error):
                if alive(child) and "spawn_main" in " ".join(child.cmdline()):
                    found.append(child)
        return found

    def tree(self) -> list[psutil.Process]:
        master = self.master()
        return [master, *master.children(recursive=True)]

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            try:
                response = await client.get(f"{self.url}/metrics")
            except httpx.HTTPError:
                return ""
        return response.text if response.status_code == 200 else ""

    async def all_workers_up(self, timeout: float = 60.0) -> str:
        """Wait until every worker has started (each publishes its pool); the metrics."""

        async def probe() -> str:
            if self.process.poll() is not None:
                raise AssertionError(f"api exited with {self.process.returncode}:\n{self.output()}")
            return await self.metrics()

        text = await eventually(
            probe,
            lambda text: pool_size(text) == [WORKERS * POOL_SIZE] and len(self.workers()) == 2,
            timeout=timeout,
            interval=0.2,
            message="the pools of both workers in /metrics",
        )
        return text


def pool_size(text: str) -> list[float]:
    if not text:
        return []
    return samples(text, "brokerx_db_pool_connections", service="api", state="size")


def is_dir(path: str) -> bool:
    return Path(path).is_dir()


async def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [proc for proc in procs if alive(proc)]


@pytest.fixture
def api_env(servers: ServerUrls, database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != MULTIPROC_ENV}
    env.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": servers.redis_url,
            "API_PORT": str(free_port()),
            "API_WORKERS": str(WORKERS),
            "DB_POOL_SIZE": str(POOL_SIZE),
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def run_api(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ApiServer]]:
    """Starts api processes; kills whatever is left of them at teardown."""
    started: list[ApiServer] = []

    def run(env: dict[str, str]) -> ApiServer:
        log = tmp_path / f"api-{len(started)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "brokerx_api"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ApiServer(process, int(env["API_PORT"]), log)
        started.append(server)
        return server

    yield run
    for server in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)  # the group outlives its leader
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(10)


def stale_counter(directory: Path) -> Path:
    """A counter file left by an earlier run: 1000 /health requests of a dead process."""
    path = directory / "counter_999999.db"
    values = MmapedDict(str(path))
    key = mmap_key(
        "http_requests",
        REQUESTS,
        ["handler", "method", "status"],
        ["/health", "GET", "2xx"],
        "Total number of requests by method, status and handler.",
    )
    values.write_value(key, 1000.0, 0.0)
    values.close()
    return path


async def load_until_every_worker_served(server: ApiServer, directory: Path) -> int:
    """GET /health on fresh connections until each worker counted some; how many sent."""
    sent = 0
    limits = httpx.Limits(max_keepalive_connections=0)  # every request a new accept()
    async with httpx.AsyncClient(
        base_url=server.url, timeout=10, trust_env=False, limits=limits
    ) as client:
        while sent < MAX_REQUESTS:
            await asyncio.gather(*(client.get("/health") for _ in range(40)))
            sent += 40
            pids = [worker.pid for worker in server.workers()]
            shares = [counter_of_pid(directory, pid, REQUESTS, handler="/health") for pid in pids]
            if len(shares) == WORKERS and all(shares):
                return sent
    raise AssertionError(f"one worker served nothing out of {sent} requests")


async def test_both_workers_serve_and_metrics_add_up_over_them(
    api_env: dict[str, str], run_api: Callable[[dict[str, str]], ApiServer], tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = stale_counter(directory)
    server = run_api({**api_env, MULTIPROC_ENV: str(directory)})
    await server.all_workers_up()
    assert not stale.exists(), "the master must empty the directory before the workers start"

    sent = await load_until_every_worker_served(server, directory)

    # Counted after each response is sent: wait for the last ones to land.
    text = await eventually(
        server.metrics,
        lambda text: bool(text) and total(text, REQUESTS, handler="/health") >= sent,
        timeout=10,
        message="every request counted",
    )
    assert total(text, REQUESTS, handler="/health") == sent
    workers = server.workers()
    shares = [counter_of_pid(directory, w.pid, REQUESTS, handler="/health") for w in workers]
    assert sum(shares) == sent
    assert all(0 < share < sent for share in shares), shares  # one worker alone is not enough

    # The process gauges are the api's totals, under the single-process names and labels.
    assert pool_size(text) == [WORKERS * POOL_SIZE]
    rss = samples(text, "brokerx_process_memory_bytes", service="api", kind="rss")
    assert len(rss) == 1
    assert rss[0] > max(worker.memory_info().rss for worker in workers)
    assert samples(text, "brokerx_ws_connections") == [0.0]
    assert "pid=" not in text

    # A worker dies: the master replaces it; its gauges go, its counts stay.
    victim = workers[0]
    victim.kill()

    async def replaced() -> list[int]:
        return sorted(worker.pid for worker in server.workers())

    pids = await eventually(
        replaced,
        lambda pids: len(pids) == WORKERS and victim.pid not in pids,
        timeout=30,
        interval=0.2,
        message="a replacement worker",
    )

    async def gauge_pids() -> set[int]:
        return live_gauge_pids(directory)

    await eventually(
        gauge_pids, lambda live: live == set(pids), timeout=10, message="only live workers"
    )
    text = await server.all_workers_up()
    assert pool_size(text) == [WORKERS * POOL_SIZE]
    assert total(text, REQUESTS, handler="/health") == sent


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="SIGTERM-to-the-master"),
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="Ctrl-C-to-the-group"),
    ],
)
async def test_stopping_the_master_stops_every_worker(
    api_env: dict[str, str],
    run_api: Callable[[dict[str, str]], ApiServer],
    stop: Callable[[int], None],
) -> None:
    server = run_api(api_env)  # no PROMETHEUS_MULTIPROC_DIR: the master makes a private one
    await server.all_workers_up()  # ... and /metrics still adds the workers up
    private = server.workers()[0].environ()[MULTIPROC_ENV]
    assert is_dir(private)
    tree = server.tree()
    assert len(tree) >= 1 + WORKERS

    stop(server.process.pid)
    assert await asyncio.to_thread(server.process.wait, 30) == 0, server.output()
    await eventually(lambda: running(tree), lambda left: not left, timeout=10)
    assert not is_dir(private), "the private metrics directory is removed on the way out"
    assert port_is_free(server.port)


async def test_workers_exit_by_themselves_when_the_master_is_killed(
    api_env: dict[str, str], run_api: Callable[[dict[str, str]], ApiServer], tmp_path: Path
) -> None:
    server = run_api({**api_env, MULTIPROC_ENV: str(tmp_path / "metrics")})
    await server.all_workers_up()
    tree = server.tree()

    server.master().kill()  # no chance to stop its workers
    await asyncio.to_thread(server.process.wait, 10)
    await eventually(lambda: running(tree), lambda left: not left, timeout=30, interval=0.2)
    assert port_is_free(server.port), "an orphaned worker still holds the port"
