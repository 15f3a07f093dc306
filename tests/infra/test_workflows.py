""".github/workflows: a deploy only ever ships a commit CI passed on, and CI builds the
Docker images the deploy would build.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github/workflows"


def load(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load("ci.yml")


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load("deploy.yml")


def test_deploy_starts_only_when_the_ci_workflow_completes(
    ci: dict[str, Any], deploy: dict[str, Any]
) -> None:
    triggers = deploy["on"]
    assert set(triggers) == {"workflow_run", "workflow_dispatch"}, "no `push`: never beside CI"
    run = triggers["workflow_run"]
    assert run["workflows"] == [ci["name"]]
    assert run["types"] == ["completed"]
    assert run["branches"] == ["main"]


def test_deploy_job_requires_a_successful_push_run_of_this_repository(
    deploy: dict[str, Any],
) -> None:
    (job,) = deploy["jobs"].values()
    condition = " ".join(job["if"].split())
    assert "github.event.workflow_run.conclusion == 'success'" in condition
    assert "github.event.workflow_run.event == 'push'" in condition
    assert "github.event.workflow_run.head_branch == 'main'" in condition
    assert "github.event.workflow_run.head_repository.full_name == github.repository" in condition
    # The automatic path is all of those together; only a manual run skips them.
    automatic = condition.split("||", 1)[1]
    assert automatic.count("&&") == 3
    assert condition.split("||", 1)[0].strip() == "github.event_name == 'workflow_dispatch'"


def test_deploy_ships_the_commit_ci_tested(deploy: dict[str, Any]) -> None:
    (job,) = deploy["jobs"].values()
    checkout = next(
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout")
    )
    assert checkout["with"]["ref"] == "${{ github.event.workflow_run.head_sha || github.sha }}"
    step = next(s for s in job["steps"] if "scripts/deploy.sh" in s.get("run", ""))
    assert step["env"]["REF"] == (
        "${{ github.event.inputs.ref || github.event.workflow_run.head_sha || github.sha }}"
    )
    assert '"$REF"' in step["run"]
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_ci_builds_the_docker_images(ci: dict[str, Any]) -> None:
    assert set(ci["on"]) >= {"push", "pull_request"}
    commands = [
        " ".join(step["run"].split())
        for job in ci["jobs"].values()
        for step in job["steps"]
        if "run" in step
    ]
    assert any(c.startswith("docker compose build") for c in commands), commands
    # compose reads the secret files: they must exist before the build.
    builder = next(
        job
        for job in ci["jobs"].values()
        if any("docker compose build" in s.get("run", "") for s in job["steps"])
    )
    runs = [step.get("run", "") for step in builder["steps"]]
    assert runs.index("scripts/make-secrets.sh") < next(
        i for i, run in enumerate(runs) if run.startswith("docker compose build")
    )
    assert builder["runs-on"] == "ubuntu-latest"  # GitHub's runners have Docker
