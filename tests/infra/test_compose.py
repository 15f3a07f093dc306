"""docker-compose.yml: validates offline and wires the platform the way the runbook says.

Assertions run on `docker-compose config --format json`, i.e. the model Docker would
run after YAML anchors, merges and interpolation, not on the raw text.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from brokerx_core.auth.secretbox import SecretBox, split_keys

from .conftest import REPO_ROOT, SECRET_NAMES, run_compose

APP_SERVICES = ("api", "matching", "worker", "migrate")
ONE_SHOT = {"migrate"}
LOCALHOST_ONLY = {"prometheus": 9090, "grafana": 3001, "alertmanager": 9093, "mailpit": 8025}
_compose = run_compose


@pytest.fixture(scope="module")
def project(compose_project: Path) -> Path:
    return compose_project


@pytest.fixture(scope="module")
def config(compose_config: dict[str, Any]) -> dict[str, Any]:
    return compose_config


@pytest.fixture(scope="module")
def services(compose_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return compose_services


def test_compose_file_validates_offline(project: Path) -> None:
    for profile_args in ([], ["--profile", "mail"]):
        result = _compose(project, *profile_args, "config", "-q")
        assert result.returncode == 0, result.stderr


def test_raw_yaml_parses_and_lists_every_part() -> None:
    raw = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert set(raw["services"]) == {
        "api",
        "matching",
        "worker",
        "migrate",
        "postgres",
        "redis",
        "nginx",
        "prometheus",
        "grafana",
        "alertmanager",
        "mailpit",
    }


def test_long_running_services_have_healthcheck_and_restart(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        healthcheck = service.get("healthcheck", {})
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_migrate_is_a_one_shot_that_migrates_then_seeds(services: dict[str, Any]) -> None:
    migrate = services["migrate"]
    assert migrate.get("restart") in (None, "no")
    command = " ".join(migrate["command"])
    assert command.index("brokerx_core.migrate upgrade") < command.index("brokerx_core.seed")
    assert "&&" in command, "seeding must not run after a failed migration"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_app_services_depend_on_completed_migration(services: dict[str, Any]) -> None:
    for name in ("api", "matching", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), (
                f"{name} -> {dependency} only waits for the container to start"
            )


def test_services_run_as_non_root(services: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        assert services[name].get("user") == "10001:10001", name
        assert services[name].get("read_only") is True, name
        assert "ALL" in services[name].get("cap_drop", []), name
    for name, service in services.items():
        user = str(service.get("user", ""))
        assert user, f"{name} runs as the image's default user"
        assert user.split(":")[0] not in ("root", "0"), f"{name} runs as root"


def test_only_nginx_is_public(services: dict[str, Any]) -> None:
    public = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip", "")
            if host_ip in ("", "0.0.0.0", "::"):
                public.setdefault(name, set()).add(int(port["published"]))
            else:
                assert host_ip == "127.0.0.1", f"{name} binds {host_ip}"
    assert public == {"nginx": {80, 443}}
    for name, port in LOCALHOST_ONLY.items():
        published = {(p.get("host_ip"), int(p["published"])) for p in services[name]["ports"]}
        assert published == {("127.0.0.1", port)}, name
    for name in ("api", "matching", "worker", "postgres", "redis"):
        assert not services[name].get("ports"), f"{name} must not publish a port"


def test_datastores_live_on_an_internal_network(config: dict[str, Any]) -> None:
    services = config["services"]
    assert config["networks"]["backend"].get("internal") is True
    for name in ("postgres", "redis"):
        assert set(services[name]["networks"]) == {"backend"}, name
    assert "edge" in services["nginx"]["networks"]
    assert "edge" in services["api"]["networks"]


def test_secrets_are_files_and_read_through_file_variables(config: dict[str, Any]) -> None:
    secrets = config["secrets"]
    for name in SECRET_NAMES:
        assert secrets[name]["file"].endswith(f"/secrets/{name}.txt"), name
    services = config["services"]
    for name in APP_SERVICES:
        service = services[name]
        assert {s["source"] for s in service["secrets"]} >= {"db_password", "jwt_secret"}
        env = service["environment"]
        assert env["DATABASE_PASSWORD_FILE"] == "/run/secrets/db_password", name
        assert env["JWT_SECRET_FILE"] == "/run/secrets/jwt_secret", name
        assert urlsplit(env["DATABASE_URL"]).password is None, "password inside DATABASE_URL"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/db_password"
    )
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "ENCRYPTION")):
                assert key.endswith("_FILE"), f"{name}: {key}={value!r} holds a secret inline"


def test_only_the_api_holds_the_totp_encryption_keys(services: dict[str, Any]) -> None:
    api = services["api"]
    assert {s["source"] for s in api["secrets"]} == {"db_password", "jwt_secret", "totp_keys"}
    assert api["environment"]["TOTP_ENCRYPTION_KEYS_FILE"] == "/run/secrets/totp_keys"
    # The worker writes the database dumps: with the key beside them, encrypting the
    # secrets would protect nothing in a stolen backup.
    for name, service in services.items():
        if name == "api":
            continue
        assert "totp_keys" not in {s["source"] for s in service.get("secrets", [])}, name
        assert "TOTP_ENCRYPTION_KEYS_FILE" not in (service.get("environment") or {}), name


def test_redis_appends_every_second(services: dict[str, Any]) -> None:
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(
        v["target"] == "/data" and v["type"] == "volume" for v in services["redis"]["volumes"]
    )


def test_postgres_is_16_with_a_named_volume_and_pg_isready(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(
        v["type"] == "volume" and v["target"] == "/var/lib/postgresql/data"
        for v in postgres["volumes"]
    )
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_every_service_rotates_its_logs(services: dict[str, Any]) -> None:
    for name, service in services.items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert logging["options"].get("max-size"), name
        assert logging["options"].get("max-file"), name


def test_worker_keeps_backups_on_a_volume(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["environment"]["BACKUP_DIR"] == "/backups"
    assert any(
        v["type"] == "volume" and v["source"] == "backups" and v["target"] == "/backups"
        for v in worker["volumes"]
    )


def test_images_are_pinned_and_built_from_the_shared_dockerfile(services: dict[str, Any]) -> None:
    dockerfile = (REPO_ROOT / "infra/docker/Dockerfile").read_text()
    for name, service in services.items():
        image = service["image"]
        assert ":" in image, f"{name}: {image} is not pinned"
        assert not image.endswith(":latest"), f"{name}: {image}"
        build = service.get("build")
        if build:
            assert build["dockerfile"] == "infra/docker/Dockerfile"
            assert f" AS {build['target']}\n" in dockerfile, build["target"]


def test_bind_mounted_config_exists_in_the_repository(
    services: dict[str, Any], project: Path
) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            relative = Path(volume["source"]).relative_to(project)
            if relative.parts[:3] == ("infra", "nginx", "certs"):
                continue  # generated by make-cert.sh / installed by the operator
            assert (REPO_ROOT / relative).exists(), f"{name} mounts missing {relative}"
            assert volume.get("read_only"), f"{name} mounts {relative} writable"


def test_nginx_gets_its_template_variables(services: dict[str, Any]) -> None:
    template = (REPO_ROOT / "infra/nginx/templates/brokerx.conf.template").read_text()
    env = services["nginx"]["environment"]
    used = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert used, "template without variables"
    assert used <= set(env), f"nginx lacks {used - set(env)}"
    assert env["API_UPSTREAM"] == "api:3000"
    assert env["TLS_CERT"] == "/etc/nginx/certs/server.crt"
    assert env["TLS_KEY"] == "/etc/nginx/certs/server.key"


def test_make_secrets_creates_private_files_once(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts/make-secrets.sh"
    env = {**os.environ, "SECRETS_DIR": str(tmp_path / "secrets")}
    subprocess.run([str(script)], env=env, check=True, capture_output=True)
    directory = tmp_path / "secrets"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    first = {p.name: p.read_text() for p in directory.glob("*.txt")}
    assert set(first) == {f"{name}.txt" for name in SECRET_NAMES}
    totp_key = first.pop("totp_keys.txt")
    assert all(len(value) >= 48 and value.strip() == value for value in first.values())
    # A Fernet key, as the api's settings check it at start-up.
    assert split_keys(totp_key) == [totp_key]
    assert len(base64.urlsafe_b64decode(totp_key)) == 32
    first["totp_keys.txt"] = totp_key
    subprocess.run([str(script)], env=env, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in directory.glob("*.txt")} == first
    subprocess.run(
        [str(script), "--rotate", "jwt_secret"], env=env, check=True, capture_output=True
    )
    assert (directory / "jwt_secret.txt").read_text() != first["jwt_secret.txt"]
    assert (directory / "jwt_secret.txt.previous").read_text() == first["jwt_secret.txt"]
    assert (directory / "db_password.txt").read_text() == first["db_password.txt"]


def test_make_secrets_rotates_totp_keys_by_adding_one_in_front(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts/make-secrets.sh"
    env = {**os.environ, "SECRETS_DIR": str(tmp_path / "secrets")}
    subprocess.run([str(script)], env=env, check=True, capture_output=True)
    keys_file = tmp_path / "secrets" / "totp_keys.txt"
    old_key = keys_file.read_text()
    subprocess.run([str(script), "--rotate", "totp_keys"], env=env, check=True, capture_output=True)
    # Replacing the key would make every stored secret undecryptable: the new key goes
    # first (it encrypts), the old one stays (it still decrypts) until the rekey.
    rotated = split_keys(keys_file.read_text())
    assert len(rotated) == 2
    assert rotated[1] == old_key != rotated[0]
    token = SecretBox([old_key]).encrypt("JBSWY3DPEHPK3PXP")
    assert SecretBox.from_setting(keys_file.read_text()).decrypt(token) == "JBSWY3DPEHPK3PXP"

    subprocess.run([str(script), "--retire", "totp_keys"], env=env, check=True, capture_output=True)
    assert keys_file.read_text() == rotated[0]
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o644
    refused = subprocess.run(
        [str(script), "--retire", "jwt_secret"], env=env, capture_output=True, check=False
    )
    assert refused.returncode != 0


def test_api_runs_several_workers_with_a_private_metrics_tmpfs(services: dict[str, Any]) -> None:
    api = services["api"]
    env = api["environment"]
    # One uvicorn worker per CPU of the api's cap (2 of the VM's 4 vCPUs).
    assert int(env["API_WORKERS"]) >= 2
    assert int(env["API_WORKERS"]) == float(api["cpus"])
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    mounts = dict(entry.partition(":")[::2] for entry in api["tmpfs"])
    assert "/tmp" in mounts, "the api's own tmpfs list must keep the shared /tmp"
    # A tmpfs: fresh at every container start, writable under the read-only root
    # filesystem, and owned by the user the api runs as.
    options = dict(option.partition("=")[::2] for option in mounts[metrics_dir].split(","))
    uid, gid = api["user"].split(":")
    assert (options["uid"], options["gid"]) == (uid, gid)
    assert options["mode"] == "0700"
    # Only the api aggregates worker files; anything else writing there would leak into
    # the api's /metrics.
    for name in APP_SERVICES:
        if name != "api":
            assert "PROMETHEUS_MULTIPROC_DIR" not in services[name]["environment"], name
            assert "API_WORKERS" not in services[name]["environment"], name


def test_one_symbol_shard_per_matching_process(services: dict[str, Any]) -> None:
    """Every process agrees on the shard count, and it matches the matching processes:
    a process runs its shards on one event loop, so extra shards there only add costs."""
    counts = {services[name]["environment"]["MATCHING_SHARDS"] for name in APP_SERVICES}
    assert len(counts) == 1, f"api, matching, worker and migrate disagree: {counts}"
    matching = [name for name in services if name.startswith("matching")]
    assert int(counts.pop()) == len(matching) == 1


def test_api_workers_can_be_overridden_from_the_environment(project: Path) -> None:
    result = _compose(project, "config", "--format", "json")
    default = json.loads(result.stdout)["services"]["api"]["environment"]["API_WORKERS"]
    env_file = project / "workers.env"
    env_file.write_text("API_WORKERS=4\n")
    result = _compose(project, "--env-file", str(env_file), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["api"]["environment"]["API_WORKERS"] == "4"
    assert default == "2"


def test_every_mail_transport_setting_in_env_reaches_the_worker(project: Path) -> None:
    """The runbook puts the relay's settings in `.env`: each one the worker reads (the
    credentials aside, which go in an override as a secret, and the send timeout, a
    tuning knob) must be passed through."""
    from brokerx_worker.settings import WorkerSettings

    transport = {
        name.upper()
        for name in WorkerSettings.model_fields
        if name.startswith("smtp_")
        and name not in {"smtp_username", "smtp_password", "smtp_timeout_seconds"}
    } | {"MAIL_FROM"}
    env_file = project / "relay.env"
    env_file.write_text("".join(f"{name}=from-dotenv-{name}\n" for name in sorted(transport)))
    result = _compose(project, "--env-file", str(env_file), "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    worker_env = json.loads(result.stdout)["services"]["worker"]["environment"]
    missing = {name for name in transport if worker_env.get(name) != f"from-dotenv-{name}"}
    assert not missing, f"set in .env but never reaching the worker: {sorted(missing)}"
