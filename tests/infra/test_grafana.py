"""infra/grafana: provisioning points at Prometheus and the dashboard draws the seed's
key metrics from the metrics the services export, with PromQL that parses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO_ROOT

GRAFANA_DIR = REPO_ROOT / "infra/grafana"

# Seed (physical view, "Métriques Clés") and the design's extra panels -> metric used.
REQUIRED_PANELS = {
    "orders_per_second": ["brokerx_orders_received_total"],
    "average_response_time": [
        "http_request_duration_seconds_sum",
        "http_request_duration_seconds_count",
    ],
    "error_rate": ['status=~"5.."', "http_requests_total"],
    "database_connections": ["brokerx_db_pool_connections"],
    "memory_usage": ["brokerx_process_memory_bytes"],
    "trades per second": ["brokerx_trades_total"],
    "stream lag": ["brokerx_stream_lag"],
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA_DIR / "dashboards/brokerx.json").read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_datasource_is_the_compose_prometheus() -> None:
    spec = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = spec["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["uid"] == "prometheus"
    assert source["isDefault"] is True


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    spec = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = spec["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert "./infra/grafana/dashboards:/etc/grafana/dashboards:ro" in mounts
    assert "./infra/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_dashboard_has_the_key_metrics(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"]
    found = {}
    for panel in panels(dashboard):
        text = (panel["title"] + " " + panel.get("description", "")).lower()
        exprs = " ".join(t["expr"] for t in panel["targets"])
        for key, metrics in REQUIRED_PANELS.items():
            if key in text.replace("_", " ") or key in text:
                found[key] = all(metric in exprs for metric in metrics)
    assert found == dict.fromkeys(REQUIRED_PANELS, True)


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_panel_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query becomes a recording rule, so promtool parses all the PromQL."""
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    rules = [
        {
            "record": f"dashboard:panel{panel['id']}:{target['refId'].lower()}",
            "expr": target["expr"],
        }
        for panel in panels(dashboard)
        for target in panel["targets"]
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
