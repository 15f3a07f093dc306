"""infra/alertmanager: the template render.sh turns into Alertmanager's configuration
with the container's environment, accepted by `amtool check-config`, routing every
alert of infra/prometheus/alerts.yml to the operators by e-mail.

render.sh runs under busybox when it is installed (the alertmanager image's shell and
awk), else under the system's sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT, require_binary

ALERTMANAGER_DIR = REPO_ROOT / "infra/alertmanager"
RENDER = ALERTMANAGER_DIR / "render.sh"


def render(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run render.sh as the container's entrypoint would, with a fake Alertmanager that
    prints its arguments."""
    output = tmp_path / "alertmanager.yml"
    busybox = shutil.which("busybox")
    if busybox:
        tools = tmp_path / "bin"
        tools.mkdir(exist_ok=True)
        for applet in ("sh", "awk", "mv", "echo"):
            link = tools / applet
            if not link.exists():
                link.symlink_to(busybox)
        shell, path = [busybox, "sh"], str(tools)
    else:
        shell, path = ["sh"], os.environ["PATH"]
    full_env = {
        "PATH": path,
        "ALERTMANAGER_TEMPLATE": str(ALERTMANAGER_DIR / "alertmanager.yml"),
        "ALERTMANAGER_CONFIG": str(output),
        "ALERTMANAGER_BIN": "echo",
        **env,
    }
    result = subprocess.run(
        [*shell, str(RENDER), "--config.file=x", "--storage.path=/alertmanager"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, output


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_binary("amtool")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def compose_env(compose_services: dict[str, Any]) -> dict[str, str]:
    """The alertmanager container's environment with compose's defaults."""
    return {k: str(v or "") for k, v in compose_services["alertmanager"]["environment"].items()}


def test_the_compose_defaults_render_a_valid_config(
    tmp_path: Path, compose_env: dict[str, str]
) -> None:
    result, output = render(tmp_path, **compose_env)
    assert result.returncode == 0, result.stderr
    # It then execs Alertmanager with the container's command line.
    assert result.stdout.split() == ["--config.file=x", "--storage.path=/alertmanager"]
    checked = amtool("check-config", str(output))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(output.read_text())
    assert config["global"]["smtp_smarthost"] == "mailpit:1025"
    assert config["global"]["smtp_require_tls"] is False
    assert config["global"]["smtp_from"] == "BrokerX <no-reply@brokerx.local>"
    assert config["global"]["smtp_auth_username"] == ""
    assert "$" not in output.read_text()
    assert oct(output.stat().st_mode & 0o777) == "0o600"


def test_a_real_relay_with_credentials_and_starttls(tmp_path: Path) -> None:
    result, output = render(
        tmp_path,
        SMTP_HOST="smtp.example.com",
        SMTP_PORT="587",
        SMTP_STARTTLS="true",
        SMTP_USERNAME="relay-user",
        SMTP_PASSWORD_FILE="/run/secrets/smtp_password",
        MAIL_FROM="BrokerX <no-reply@brokerx.example.com>",
        ALERT_EMAIL_TO="o'brien@example.com",
    )
    assert result.returncode == 0, result.stderr
    checked = amtool("check-config", str(output))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(output.read_text())
    assert config["global"] == {
        "smtp_smarthost": "smtp.example.com:587",
        "smtp_from": "BrokerX <no-reply@brokerx.example.com>",
        "smtp_auth_username": "relay-user",
        "smtp_auth_password_file": "/run/secrets/smtp_password",
        "smtp_require_tls": True,
    }
    assert config["receivers"][0]["email_configs"][0]["to"] == "o'brien@example.com"


def test_render_refuses_a_config_it_cannot_make_valid(tmp_path: Path) -> None:
    base = {
        "SMTP_HOST": "mailpit",
        "SMTP_PORT": "1025",
        "MAIL_FROM": "a@b.c",
        "ALERT_EMAIL_TO": "ops@b.c",
    }
    for spelling, expected in (("True", True), ("1", True), ("no", False), ("", False)):
        ok, output = render(tmp_path, **base, SMTP_STARTTLS=spelling)
        assert ok.returncode == 0, ok.stderr
        assert yaml.safe_load(output.read_text())["global"]["smtp_require_tls"] is expected
    bad_tls, _ = render(tmp_path, **base, SMTP_STARTTLS="maybe")
    assert bad_tls.returncode == 2
    assert "SMTP_STARTTLS" in bad_tls.stderr
    no_recipient, _ = render(tmp_path, **{**base, "ALERT_EMAIL_TO": ""}, SMTP_STARTTLS="false")
    assert no_recipient.returncode == 2
    assert "ALERT_EMAIL_TO" in no_recipient.stderr


def test_every_alert_reaches_the_operators(tmp_path: Path, compose_env: dict[str, str]) -> None:
    _, output = render(tmp_path, **compose_env)
    rules = yaml.safe_load((REPO_ROOT / "infra/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            labels = [f"alertname={rule['alert']}", f"severity={rule['labels']['severity']}"]
            routed = amtool("config", "routes", "test", f"--config.file={output}", *labels)
            assert routed.returncode == 0, routed.stdout + routed.stderr
            assert routed.stdout.strip() == "operators", rule["alert"]
    config = yaml.safe_load(output.read_text())
    (receiver,) = config["receivers"]
    assert receiver["email_configs"][0]["send_resolved"] is True


def test_prometheus_sends_its_alerts_to_alertmanager(compose_services: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO_ROOT / "infra/prometheus/prometheus.yml").read_text())
    (alertmanagers,) = prometheus["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    command = compose_services["alertmanager"]["command"]
    assert "--web.listen-address=:9093" in command
    assert "--cluster.listen-address=" in command  # one instance: no gossip port


def test_render_is_posix_sh_and_lint_clean() -> None:
    # The alertmanager image has busybox sh, no bash.
    assert RENDER.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(RENDER)], check=False).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        result = subprocess.run(
            [shellcheck, "--shell=sh", str(RENDER)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout
