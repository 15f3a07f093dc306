"""infra/docker/Dockerfile: multi-stage uv build, non-root runtime, working healthchecks.

No Docker engine runs here, so the Dockerfile is parsed; the parts that can run without
one do run: the HEALTHCHECK commands against a real HTTP server, and the
`uv sync --frozen` steps against the real lock file.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "infra/docker/Dockerfile"
SERVICES = {"api": "API_PORT", "matching": "OPS_PORT", "worker": "OPS_PORT"}
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "PRIVATE", "API_KEY", "CREDENTIAL")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """(global ARGs, stages) with line continuations joined and comments dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            assert match, line
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
        else:
            preamble.append((keyword, args.strip()))
    return preamble, stages


@pytest.fixture(scope="module")
def parsed() -> tuple[list[tuple[str, str]], dict[str, Stage]]:
    preamble, stages = parse_dockerfile(DOCKERFILE.read_text())
    return preamble, {stage.name: stage for stage in stages}


def lineage(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    while chain[-1].base in stages:
        chain.append(stages[chain[-1].base])
    return chain


def test_is_multi_stage_with_one_target_per_service(parsed) -> None:
    _, stages = parsed
    assert len(stages) >= 4
    assert set(SERVICES) <= set(stages)


def test_builds_with_uv_sync_frozen_without_dev_dependencies(parsed) -> None:
    _, stages = parsed
    for service in SERVICES:
        build_stage = f"build-{service}"
        runs = " ".join(run for stage in lineage(stages, build_stage) for run in stage.all("RUN"))
        syncs = re.findall(r"uv sync [^;&]*", runs)
        assert syncs, f"{build_stage} never runs uv sync"
        for sync in syncs:
            assert "--frozen" in sync, sync
            assert "--no-dev" in sync, sync
            assert f"--package brokerx-{service}" in sync, sync
        copies = [args for args in stages[service].all("COPY") if "--from=" in args]
        assert any(f"--from={build_stage} " in c and "/app/.venv" in c for c in copies), service


def test_runtime_is_slim_python_311_without_uv(parsed) -> None:
    preamble, stages = parsed
    args = dict(a.split("=", 1) for kw, a in preamble if kw == "ARG" and "=" in a)
    for service in SERVICES:
        chain = lineage(stages, service)
        base = chain[-1].base.replace("${PYTHON_VERSION}", args["PYTHON_VERSION"])
        base = base.replace("${DEBIAN_RELEASE}", args["DEBIAN_RELEASE"])
        assert base.startswith("python:3.11-slim"), base
        for stage in chain:
            for copy in stage.all("COPY"):
                assert "--from=uv" not in copy, f"{service} ships the uv binary"


def test_runs_as_uid_10001(parsed) -> None:
    _, stages = parsed
    runtime_runs = " ".join(stages["runtime"].all("RUN"))
    assert "--uid 10001" in runtime_runs
    for service in SERVICES:
        users = stages[service].all("USER")
        assert users, f"{service} has no USER"
        assert users[-1].split(":")[0] == "10001", users[-1]
        # Nothing after USER may need root.
        kinds = [kw for kw, _ in stages[service].instructions]
        assert "RUN" not in kinds[kinds.index("USER") :], service


def test_no_secret_is_baked_into_a_layer(parsed) -> None:
    preamble, stages = parsed
    declared = list(preamble) + [i for s in stages.values() for i in s.instructions]
    for keyword, args in declared:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]
            for name in names:
                assert not any(word in name.upper() for word in SECRET_WORDS), f"{keyword} {args}"
    for stage in stages.values():
        for copy in stage.all("COPY"):
            assert "secrets" not in copy
            assert ".env" not in copy.split()


def test_worker_has_postgresql_client_16(parsed) -> None:
    _, stages = parsed
    worker = stages["worker"]
    pg_major = next(a.split("=", 1)[1] for a in worker.all("ARG") if a.startswith("PG_MAJOR="))
    assert int(pg_major) >= 16
    runs = " ".join(worker.all("RUN"))
    assert "postgresql-client-${PG_MAJOR}" in runs
    assert "apt.postgresql.org" in runs
    assert "rm -rf /var/lib/apt/lists" in runs
    assert any("/backups" in run and "10001" in run for run in worker.all("RUN"))


def test_copied_sources_exist_and_are_not_dockerignored(parsed) -> None:
    _, stages = parsed
    ignore = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages.values():
        for copy in stage.all("COPY"):
            parts = [p for p in shlex.split(copy) if not p.startswith("--")]
            if any(p.startswith("--from=") for p in shlex.split(copy)):
                continue
            for source in parts[:-1]:
                assert (REPO_ROOT / source).exists(), f"COPY {source}: no such path"
                for pattern in ignore:
                    if pattern.startswith("!"):
                        continue
                    pat = pattern.rstrip("/").removeprefix("**/")
                    assert not fnmatch.fnmatch(source, pat), f"{source} is excluded by {pattern}"
                    assert not source.startswith(pat + "/"), f"{source} excluded by {pattern}"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    for entry in ("**/.git", "**/.venv", "secrets/", ".env", "**/*.key", "**/*.dump", "tests/"):
        assert entry in ignore, entry


def healthcheck_command(stage: Stage) -> list[str]:
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert "--interval=" in healthcheck
    assert "--start-period=" in healthcheck
    command = healthcheck[healthcheck.index("CMD") + 3 :].strip()
    return json.loads(command)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.server.status if self.path == "/health" else 404  # type: ignore[attr-defined]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_healthcheck_follows_the_health_endpoint(parsed, health_server, service: str) -> None:
    """The HEALTHCHECK command exits 0 on 200 and non-zero on 503 (no curl in the image)."""
    _, stages = parsed
    command = healthcheck_command(stages[service])
    assert command[0] == "python"
    port = health_server.server_address[1]
    env = {**os.environ, SERVICES[service]: str(port)}
    argv = [shutil.which("python") or "python3", *command[1:]]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode == 0
    health_server.status = 503  # type: ignore[attr-defined]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=10).returncode != 0
    assert stages[service].all("CMD") == [f'["brokerx-{service}"]']


def test_uv_sync_steps_work_on_the_real_lock(parsed, tmp_path: Path) -> None:
    """Replays the build's two `uv sync` steps for the worker in a scratch workspace."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    _, stages = parsed
    workspace = tmp_path / "src"
    workspace.mkdir()
    for copy in stages["workspace"].all("COPY"):
        parts = shlex.split(copy)
        if parts[0].startswith("--from="):
            continue
        sources, destination = parts[:-1], parts[-1]
        for source in sources:
            target = workspace / (source if destination == "./" else destination)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / source, target)
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    env.pop("VIRTUAL_ENV", None)
    first, second = (
        shlex.split(re.search(r"uv sync [^;&]*", run).group(0).strip())  # type: ignore[union-attr]
        for run in stages["build-worker"].all("RUN")
    )
    result = subprocess.run(
        first, cwd=workspace, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for source in ("libs/brokerx-core/src", "services/worker/src"):
        shutil.copytree(REPO_ROOT / source, workspace / source)
    result = subprocess.run(
        second, cwd=workspace, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    python = tmp_path / "venv/bin/python"
    check = subprocess.run(
        [str(python), "-c", "import brokerx_worker.backup, brokerx_core.settings"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert (tmp_path / "venv/bin/brokerx-worker").exists()


def test_api_image_starts_the_multi_worker_aware_entry_point(parsed) -> None:
    # `brokerx-api` reads API_WORKERS and prepares Prometheus multiprocess mode before
    # any worker starts; a bare `uvicorn --workers` would serve one worker's metrics.
    _, stages = parsed
    assert json.loads(stages["api"].all("CMD")[-1]) == ["brokerx-api"]
    # Worker count and metrics directory belong to the deployment (compose sets both,
    # with the directory on a tmpfs under the read-only root filesystem).
    for stage in lineage(stages, "api"):
        for env in stage.all("ENV"):
            assert "API_WORKERS" not in env, env
            assert "PROMETHEUS_MULTIPROC_DIR" not in env, env
