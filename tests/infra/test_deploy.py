"""scripts/deploy.sh and scripts/rollback.sh over a real SSH hop.

A throwaway sshd (temp host key, temp authorized key, high port) stands for the VM; the
"VM directory" is a clone of a bare repository holding tags v1..v4. COMPOSE_CMD and
HEALTH_CMD are stubs that record the checked-out VERSION, so the tests see what ran, in
which order and on which release.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, free_port, require_binary, wait_for_port

SCRIPTS = REPO_ROOT / "scripts"
SHELL_SCRIPTS = [
    SCRIPTS / "deploy.sh",
    SCRIPTS / "rollback.sh",
    SCRIPTS / "backup.sh",
    SCRIPTS / "restore.sh",
    SCRIPTS / "make-secrets.sh",
    REPO_ROOT / "infra/vm/provision.sh",
    REPO_ROOT / "infra/nginx/make-cert.sh",
    REPO_ROOT / "infra/ci/install-system-deps.sh",
]


def git(*args: str, cwd: Path) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Vm:
    port: int
    key: Path
    known_hosts: Path


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vm]:
    """sshd on a free port, accepting one temp key for the current user."""
    sshd = require_binary("sshd", "/usr/sbin/sshd")
    require_binary("ssh")
    require_binary("ssh-keygen")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {root / "host_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
AllowUsers {getpass.getuser()}
"""
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
    log = (root / "sshd.log").open("w")
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port)
        yield Vm(port=port, key=root / "client_key", known_hosts=root / "known_hosts")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository with tags v1..v4; v4 is a release that never gets healthy."""
    root = tmp_path_factory.mktemp("git")
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    for version in ("v1", "v2", "v3", "v4"):
        (work / "VERSION").write_text(version + "\n")
        if version == "v4":
            (work / "healthy").unlink()
        else:
            (work / "healthy").write_text("yes\n")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"release {version}", cwd=work)
        git("tag", version, cwd=work)
    bare = root / "origin.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return bare


@dataclass
class Target:
    directory: Path
    calls: Path
    env: dict[str, str]

    def deploy(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / "deploy.sh"), *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def rollback(self, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SCRIPTS / "rollback.sh")],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def current(self) -> str:
        return (self.directory / ".deploy/current").read_text().strip()

    def history(self) -> list[str]:
        return (self.directory / ".deploy/history").read_text().split()

    def checked_out(self) -> str:
        return (self.directory / "VERSION").read_text().strip()

    def recorded_calls(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def target(vm: Vm, origin: Path, tmp_path: Path) -> Target:
    """A fresh clone on the "VM" and the environment deploy.sh reads."""
    directory = tmp_path / "opt-brokerx"
    git("clone", "-q", str(origin), str(directory), cwd=tmp_path)
    calls = tmp_path / "calls.log"
    env = {
        **os.environ,
        "VM_HOST": "127.0.0.1",
        "VM_PORT": str(vm.port),
        "VM_USER": getpass.getuser(),
        "VM_SSH_KEY": str(vm.key),
        "VM_DIR": str(directory),
        "SSH_OPTS": f"-F /dev/null -o UserKnownHostsFile={vm.known_hosts} -o LogLevel=ERROR",
        # Stubs for `docker compose up` and the health wait; they run in VM_DIR.
        "COMPOSE_CMD": f'echo "up $(cat VERSION)" >> {calls}',
        "HEALTH_CMD": f'echo "health $(cat VERSION)" >> {calls}; test -f healthy',
    }
    return Target(directory=directory, calls=calls, env=env)


def test_deploy_then_rollback(target: Target) -> None:
    first = target.deploy("v2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert target.current() == "v2"
    assert target.checked_out() == "v2"

    second = target.deploy("v3")
    assert second.returncode == 0, second.stdout + second.stderr
    assert target.current() == "v3"
    assert target.history() == ["v2", "v3"]
    assert target.checked_out() == "v3"
    assert target.recorded_calls() == ["up v2", "health v2", "up v3", "health v3"]
    assert "v3 is live (previous: v2)" in second.stdout

    back = target.rollback()
    assert back.returncode == 0, back.stdout + back.stderr
    assert target.current() == "v2"
    assert target.checked_out() == "v2"
    assert target.history() == ["v2"]
    assert target.recorded_calls()[-2:] == ["up v2", "health v2"]

    journal = (target.directory / ".deploy/deploy.log").read_text().splitlines()
    assert [line.split()[1:] for line in journal] == [
        ["deploy", "v2", "ok"],
        ["deploy", "v3", "ok"],
        ["rollback", "v2", "ok"],
    ]


def test_redeploying_the_same_tag_is_idempotent(target: Target) -> None:
    for _ in range(2):
        result = target.deploy("v1")
        assert result.returncode == 0, result.stdout + result.stderr
    assert target.history() == ["v1"]
    assert target.current() == "v1"


def test_tag_defaults_to_the_TAG_variable(target: Target) -> None:
    result = target.deploy(TAG="v1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.current() == "v1"


def test_an_unhealthy_release_is_rolled_back_automatically(target: Target) -> None:
    assert target.deploy("v3").returncode == 0
    result = target.deploy("v4")
    assert result.returncode != 0
    assert "v3 is live again" in result.stderr
    assert target.current() == "v3"
    assert target.checked_out() == "v3"
    assert target.history() == ["v3"]
    assert target.recorded_calls()[-4:] == ["up v4", "health v4", "up v3", "health v3"]


def test_unknown_tag_changes_nothing(target: Target) -> None:
    assert target.deploy("v2").returncode == 0
    result = target.deploy("v9")
    assert result.returncode != 0
    assert "v9 is not a tag, branch or commit" in result.stderr
    assert target.current() == "v2"
    assert target.checked_out() == "v2"


def test_rollback_without_an_earlier_release_fails_cleanly(target: Target) -> None:
    result = target.rollback()
    assert result.returncode != 0
    assert "no earlier release" in result.stderr
    assert target.deploy("v1").returncode == 0
    result = target.rollback()
    assert result.returncode != 0
    assert target.current() == "v1"


def test_deploy_requires_a_host(target: Target) -> None:
    env = {k: v for k, v in target.env.items() if k != "VM_HOST"}
    result = subprocess.run(
        [str(SCRIPTS / "deploy.sh"), "v1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "VM_HOST is not set" in result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_are_strict_and_lint_clean(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    shellcheck = subprocess.run(["which", "shellcheck"], capture_output=True, text=True)
    if shellcheck.returncode == 0:
        result = subprocess.run(
            ["shellcheck", "-S", "warning", str(script)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout
