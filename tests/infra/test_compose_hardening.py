"""docker-compose.yml, continued: resource caps sized for the VM, network segmentation
(no app container with a route out but the worker's mail), capabilities and privilege
escalation, Alertmanager's wiring. On `docker-compose config --format json`.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

ONE_SHOT = {"migrate"}
APPS = {"api", "matching", "worker", "migrate"}
# The physical view's production VM (seed/physical_view.md): 4 vCPUs, 8 GB.
VM_CPUS = 4
VM_MEMORY = 8 * 1024**3
MIB = 1024**2


@pytest.fixture(scope="module")
def config(compose_config: dict[str, Any]) -> dict[str, Any]:
    return compose_config


@pytest.fixture(scope="module")
def services(compose_services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return compose_services


def _memory(service: dict[str, Any]) -> int:
    return int(service["mem_limit"])


def test_every_service_has_cpu_memory_and_process_caps(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert 0 < float(service.get("cpus", 0)) <= VM_CPUS, f"{name}: no CPU cap"
        assert 64 * MIB <= _memory(service) <= 2048 * MIB, f"{name}: mem_limit"
        assert 32 <= int(service.get("pids_limit", 0)) <= 1024, f"{name}: no pids_limit"
        assert "deploy" not in service or not service["deploy"].get("resources"), (
            f"{name}: one way of setting limits (cpus/mem_limit/pids_limit), not two"
        )


def test_memory_caps_leave_room_for_the_host(services: dict[str, Any]) -> None:
    long_running = {n: s for n, s in services.items() if n not in ONE_SHOT}
    total = sum(_memory(s) for s in long_running.values())
    # Even with a second matching process (runbook, "Symbol shards"), at least 768 MiB
    # stays for the host, Docker and the page cache outside the containers.
    assert total + _memory(services["matching"]) <= VM_MEMORY - 768 * MIB, total // MIB
    # The api's workers need their CPUs; PostgreSQL has the most memory.
    assert float(services["api"]["cpus"]) >= 2
    largest = max(_memory(service) for service in services.values())
    assert _memory(services["postgres"]) == largest


def test_redis_maxmemory_makes_noeviction_apply_below_its_cap(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    value = command[command.index("--maxmemory") + 1].lower()
    units = {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "k": 1024, "m": MIB, "g": 1024**3}
    unit = next(u for u in sorted(units, key=len, reverse=True) if value.endswith(u))
    maxmemory = int(value.removesuffix(unit)) * units[unit]
    assert maxmemory > 0, "maxmemory 0 is unlimited: noeviction would never apply"
    # Headroom for the AOF rewrite's fork (copied pages count against the cap).
    assert maxmemory <= 0.75 * _memory(redis)


def test_no_app_container_has_a_route_out_but_the_workers_mail(
    config: dict[str, Any], services: dict[str, Any]
) -> None:
    networks = config["networks"]
    internal = {name for name, spec in networks.items() if spec.get("internal") is True}
    assert {"backend", "edge"} <= internal
    for name in APPS:
        outside = set(services[name]["networks"]) - internal
        allowed = {"egress"} if name == "worker" else set()
        assert outside == allowed, f"{name} reaches the Internet through {outside}"
    assert "egress" in services["worker"]["networks"]  # SMTP, documented
    # nginx alone publishes to the world, on a network of its own.
    public = {n for n, s in services.items() if "public" in s["networks"]}
    assert public == {"nginx"}
    assert set(services["nginx"]["networks"]) == {"public", "edge"}
    edge = {n for n, s in services.items() if "edge" in s["networks"]}
    assert edge == {"nginx", "api"}
    # Monitoring holds no app container; Prometheus scrapes them on `backend`.
    for name, service in services.items():
        if "monitoring" in service["networks"]:
            assert name in {"prometheus", "grafana", "alertmanager"}, name
    assert "backend" in services["prometheus"]["networks"]


def test_prometheus_shares_a_network_with_every_target(services: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((REPO_ROOT / "infra/prometheus/prometheus.yml").read_text())
    shared = set(services["prometheus"]["networks"])
    for job in prometheus["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                assert shared & set(services[host]["networks"]), f"{host} is unreachable"
    for am in prometheus["alerting"]["alertmanagers"]:
        for target in (t for sc in am["static_configs"] for t in sc["targets"]):
            host = target.split(":")[0]
            assert shared & set(services[host]["networks"]), f"{host} is unreachable"


def test_every_container_drops_capabilities_and_privilege_escalation(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert service.get("cap_drop") == ["ALL"], name
        # All of them start as their unprivileged user (no gosu/su-exec, nginx on
        # 8080/8443 inside): none needs a capability back.
        assert not service.get("cap_add"), f"{name} adds {service.get('cap_add')}"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert not service.get("privileged"), name
        user = str(service["user"]).split(":")[0]
        assert user not in ("", "0", "root"), f"{name} starts as root"


def test_alertmanager_mails_through_the_workers_smtp_settings(
    services: dict[str, Any],
) -> None:
    alertmanager = services["alertmanager"]
    assert alertmanager["image"].startswith("prom/alertmanager:v")
    env = alertmanager["environment"]
    worker_env = services["worker"]["environment"]
    for key in ("SMTP_HOST", "SMTP_PORT", "SMTP_STARTTLS", "MAIL_FROM"):
        assert env[key] == worker_env[key], key
    assert env["ALERT_EMAIL_TO"]
    assert alertmanager["entrypoint"] == ["/bin/sh", "/etc/alertmanager/render.sh"]
    assert "--config.file=/tmp/alertmanager.yml" in alertmanager["command"]
    assert {"egress", "monitoring"} <= set(alertmanager["networks"])  # Mailpit, relay
    mounts = {v["target"]: v for v in alertmanager["volumes"]}
    assert mounts["/etc/alertmanager"]["source"].endswith("/infra/alertmanager")
    assert mounts["/alertmanager"]["type"] == "volume"
    assert alertmanager["read_only"] is True
