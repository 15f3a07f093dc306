"""infra/prometheus: valid config, the three scrape targets, and alert rules that fire
when they should (promtool's rule unit tests on synthetic series) and not before.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "infra/prometheus"
EXPECTED_ALERTS = {
    "ServiceDown",
    "HighErrorRate",
    "OrderAckLatencyHigh",
    "StreamLagHigh",
    "BackupTooOld",
    "BackupFailed",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_scrapes_every_replica_of_the_three_services_by_dns(config: dict[str, Any]) -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name, port in (("api", 3000), ("matching", 8001), ("worker", 8002)):
        job = jobs[name]
        # `matching:8001` would be one target whatever `--scale matching=N` started.
        assert "static_configs" not in job, f"{name}: a static target hides the replicas"
        assert job["dns_sd_configs"] == [
            {"names": [name], "type": "A", "port": port, "refresh_interval": "15s"}
        ]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert compose[name]["expose"] == [str(port)], name
        assert {"target_label": "service", "replacement": name} in job["relabel_configs"]
    assert config["rule_files"] == ["alerts.yml"]


def test_every_alert_has_expr_for_severity_and_annotations(rules: dict[str, Any]) -> None:
    assert set(rules) == EXPECTED_ALERTS
    runbook = (REPO_ROOT / "docs/operations.md").read_text().lower()
    for name, rule in rules.items():
        assert rule["expr"].strip(), name
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        anchor = annotations["runbook"].split("#", 1)[1]
        assert f"### {anchor}" in runbook, f"docs/operations.md lacks a '### {name}' section"


def test_alerts_use_the_metrics_the_services_export(rules: dict[str, Any]) -> None:
    assert "up{" in rules["ServiceDown"]["expr"]
    assert "http_requests_total" in rules["HighErrorRate"]["expr"]
    assert "brokerx_order_ack_seconds_bucket" in rules["OrderAckLatencyHigh"]["expr"]
    assert "0.99" in rules["OrderAckLatencyHigh"]["expr"]
    assert "brokerx_stream_lag" in rules["StreamLagHigh"]["expr"]
    assert "brokerx_backup_last_success_timestamp_seconds" in rules["BackupTooOld"]["expr"]
    assert "26" in rules["BackupTooOld"]["expr"]
    assert "brokerx_backup_failures_total" in rules["BackupFailed"]["expr"]


def test_promtool_accepts_config_and_rules() -> None:
    tool = promtool()
    for args in (
        ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
    ):
        result = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# promtool rule unit tests: series values are "initial+increment x steps", one sample
# per interval. Annotations are stripped from the rules under test (checked above), so
# these cases pin only when each alert fires.
REQ = 'http_requests_total{{job="api", handler="/api/v1/orders", method="POST", status="{}"}}'
ACK = 'brokerx_order_ack_seconds_bucket{{job="api", le="{}"}}'
WORKER = '{job="worker", instance="worker:8002"}'
RULE_TESTS: list[dict[str, Any]] = [
    {  # ServiceDown: after a minute of failed scrapes, not before.
        "input_series": [
            {"series": 'up{job="api", instance="172.18.0.5:3000"}', "values": "1 1 0 0 0 0"},
            {"series": 'up{job="matching", instance="172.18.0.6:8001"}', "values": "1x5"},
            {"series": 'up{job="worker", instance="172.18.0.7:8002"}', "values": "1x5"},
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "ServiceDown", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "ServiceDown",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "api",
                            "instance": "172.18.0.5:3000",
                        }
                    }
                ],
            },
        ],
    },
    {  # ServiceDown with DNS discovery: one of two matching replicas removed is no
        # outage; every container of a service gone (no target, no `up`) is one.
        "input_series": [
            {"series": 'up{job="api", instance="172.18.0.5:3000"}', "values": "1x20"},
            {"series": 'up{job="worker", instance="172.18.0.7:8002"}', "values": "1x20"},
            {"series": 'up{job="matching", instance="172.18.0.6:8001"}', "values": "1x20"},
            {
                "series": 'up{job="matching", instance="172.18.0.8:8001"}',
                "values": "1 1 stale",
            },
            {"series": 'up{job="worker", instance="172.18.0.9:8002"}', "values": "1x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "ServiceDown", "exp_alerts": []},
        ],
    },
    {
        "input_series": [
            {"series": 'up{job="api", instance="172.18.0.5:3000"}', "values": "1x20"},
            {"series": 'up{job="worker", instance="172.18.0.7:8002"}', "values": "1x20"},
            {"series": 'up{job="matching", instance="172.18.0.6:8001"}', "values": "1 1 stale"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "ServiceDown", "exp_alerts": []},
            {
                "eval_time": "5m",
                "alertname": "ServiceDown",
                "exp_alerts": [{"exp_labels": {"severity": "critical", "job": "matching"}}],
            },
        ],
    },
    {  # HighErrorRate: 10 % of api requests fail for 5 minutes; other jobs do not count.
        "input_series": [
            {"series": REQ.format("2xx"), "values": "0+90x20"},
            {"series": REQ.format("5xx"), "values": "0+10x20"},
            {"series": 'http_requests_total{job="matching", status="5xx"}', "values": "0+999x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "HighErrorRate", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "HighErrorRate",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
    {  # 1 % of errors is below the threshold.
        "input_series": [
            {"series": REQ.format("2xx"), "values": "0+99x20"},
            {"series": REQ.format("5xx"), "values": "0+1x20"},
        ],
        "alert_rule_test": [{"eval_time": "15m", "alertname": "HighErrorRate", "exp_alerts": []}],
    },
    {  # OrderAckLatencyHigh: every ack between 0.5 s and 1 s.
        "input_series": [
            {"series": ACK.format("0.1"), "values": "0x20"},
            {"series": ACK.format("0.5"), "values": "0x20"},
            {"series": ACK.format("1"), "values": "0+100x20"},
            {"series": ACK.format("+Inf"), "values": "0+100x20"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "15m",
                "alertname": "OrderAckLatencyHigh",
                "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
            }
        ],
    },
    {  # Fast acks: no alert.
        "input_series": [
            {"series": ACK.format("0.1"), "values": "0+100x20"},
            {"series": ACK.format("+Inf"), "values": "0+100x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "OrderAckLatencyHigh", "exp_alerts": []}
        ],
    },
    {  # StreamLagHigh: only the lagging group, after 5 minutes.
        "input_series": [
            {
                "series": 'brokerx_stream_lag{job="matching", stream="orders.0", group="matching"}',
                "values": "5000x10",
            },
            {
                "series": 'brokerx_stream_lag{job="worker", stream="executions", group="notifier"}',
                "values": "3x10",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "StreamLagHigh", "exp_alerts": []},
            {
                "eval_time": "8m",
                "alertname": "StreamLagHigh",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "warning",
                            "stream": "orders.0",
                            "group": "matching",
                        }
                    }
                ],
            },
        ],
    },
    {  # BackupTooOld: the last success at unix time 0 is fine at 25 h, too old at 27 h.
        "input_series": [
            {
                "series": "brokerx_backup_last_success_timestamp_seconds" + WORKER,
                "values": "0x1700",
            }
        ],
        "alert_rule_test": [
            {"eval_time": "25h", "alertname": "BackupTooOld", "exp_alerts": []},
            {
                "eval_time": "27h",
                "alertname": "BackupTooOld",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "worker",
                            "instance": "worker:8002",
                        }
                    }
                ],
            },
        ],
    },
    {  # Backups succeeding all along: never too old.
        "input_series": [
            {
                "series": "brokerx_backup_last_success_timestamp_seconds" + WORKER,
                "values": "0+60x1800",
            }
        ],
        "alert_rule_test": [{"eval_time": "29h", "alertname": "BackupTooOld", "exp_alerts": []}],
    },
    {  # BackupFailed: a failure at 3m is reported, and forgotten hours later.
        "input_series": [
            {"series": "brokerx_backup_failures_total" + WORKER, "values": "0 0 0 1+0x600"}
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "BackupFailed", "exp_alerts": []},
            {
                "eval_time": "10m",
                "alertname": "BackupFailed",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "critical",
                            "job": "worker",
                            "instance": "worker:8002",
                        }
                    }
                ],
            },
            {"eval_time": "9h", "alertname": "BackupFailed", "exp_alerts": []},
        ],
    },
]


def test_alert_rules_fire_when_they_should(tmp_path: Path) -> None:
    tool = promtool()
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", **case} for case in RULE_TESTS],
    }
    (tmp_path / "rules_test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [tool, "test", "rules", str(tmp_path / "rules_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
