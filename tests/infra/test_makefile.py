"""Makefile's compose targets: `make up`/`make down` honour COMPOSE_PROFILES from the
environment, then from .env (which docker compose reads itself), and only then default
to the `mail` profile. The real recipes run, with a fake compose command recording what
it was given (the secrets/certs prerequisites are skipped with `make -o`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, run_compose

UNSET = "<unset>"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    fake = tmp_path / "fake-compose"
    fake.write_text(
        "#!/bin/sh\n"
        'printf "%s|%s\\n" "${COMPOSE_PROFILES-' + UNSET + '}" "$*" >> "$(dirname "$0")/calls"\n'
    )
    fake.chmod(0o755)
    return tmp_path


def make(project: Path, target: str, *args: str, **env: str) -> tuple[str, str]:
    """(COMPOSE_PROFILES as compose saw it, compose's arguments) for one make target."""
    make_bin = shutil.which("make")
    if make_bin is None:
        pytest.skip("make is not installed")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE", "MAKE"))}
    result = subprocess.run(
        [
            make_bin,
            "-s",
            "-C",
            str(project),
            "-o",
            "secrets",
            "-o",
            "certs",
            target,
            *args,
            f"COMPOSE={project / 'fake-compose'}",
        ],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (project / "calls").read_text().splitlines()
    (project / "calls").unlink()
    assert len(calls) == 1, calls
    profiles, _, arguments = calls[0].partition("|")
    return profiles, arguments


def test_without_any_setting_up_and_down_run_mailpit(project: Path) -> None:
    profiles, arguments = make(project, "up")
    assert profiles == "mail"
    assert arguments.split()[:4] == ["up", "-d", "--build", "--remove-orphans"]
    assert "--wait" in arguments.split()
    assert make(project, "down") == ("mail", "down")


@pytest.mark.parametrize(
    "line", ["COMPOSE_PROFILES=", "COMPOSE_PROFILES=mail,extra", "  export COMPOSE_PROFILES=x"]
)
def test_dot_env_decides_when_the_environment_does_not(project: Path, line: str) -> None:
    (project / ".env").write_text(f"SERVER_NAME=brokerx.example.com\n{line}\n")
    # Not overridden on the command line: docker compose reads .env itself.
    assert make(project, "up")[0] == UNSET
    assert make(project, "down")[0] == UNSET


def test_a_dot_env_without_profiles_still_gets_the_default(project: Path) -> None:
    (project / ".env").write_text("SERVER_NAME=brokerx.example.com\n# COMPOSE_PROFILES=\n")
    assert make(project, "up")[0] == "mail"


def test_the_environment_and_the_command_line_win_over_dot_env(project: Path) -> None:
    (project / ".env").write_text("COMPOSE_PROFILES=mail\n")
    assert make(project, "up", COMPOSE_PROFILES="")[0] == ""  # set, even empty
    assert make(project, "up", COMPOSE_PROFILES="other")[0] == "other"
    assert make(project, "up", "COMPOSE_PROFILES=cli")[0] == "cli"


def test_docker_compose_reads_compose_profiles_from_dot_env(compose_project: Path) -> None:
    """The other half: left unset by make, the profile in .env still applies."""
    env_file = compose_project / ".env"
    try:
        env_file.write_text("COMPOSE_PROFILES=mail\n")
        with_mail = run_compose(compose_project, "config", "--services")
        env_file.write_text("COMPOSE_PROFILES=\n")
        without = run_compose(compose_project, "config", "--services")
    finally:
        env_file.unlink(missing_ok=True)
    assert with_mail.returncode == 0, with_mail.stderr
    assert "mailpit" in with_mail.stdout.split()
    assert "mailpit" not in without.stdout.split()


@pytest.mark.parametrize(("grace", "expected"), [("30", "--pending-grace 30"), ("", None)])
def test_make_invariants_checks_pending_orders_only_when_given_a_grace(
    grace: str, expected: str | None
) -> None:
    """`make invariants PENDING_GRACE=30` also checks nothing stays `pending_new` (only
    meaningful with the engines running); without it, a restored database passes."""
    make_bin = shutil.which("make")
    if make_bin is None:
        pytest.skip("make is not installed")
    args = [
        make_bin,
        "-n",
        "--no-print-directory",
        "-C",
        str(REPO_ROOT),
        "-o",
        "install",
        "invariants",
    ]
    if grace:
        args.append(f"PENDING_GRACE={grace}")
    recipe = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    command = recipe.strip().splitlines()[-1]
    assert "-m brokerx_core.invariants" in command
    if expected is None:
        assert "--pending-grace" not in command
    else:
        assert command.endswith(expected)
