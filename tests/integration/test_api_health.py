"""The api's /health, /metrics and request ids."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from brokerx_core.observability.health import HEARTBEAT_KEY


async def test_health_is_ok_when_every_dependency_is_up(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    for service in ("matching", "worker"):
        await redis.set(HEARTBEAT_KEY.format(service=service), "1", ex=30)
    response = await api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"database": True, "redis": True, "matching": True, "worker": True}
    assert "timestamp" in body


async def test_health_is_503_when_the_engine_heartbeat_is_missing(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await redis.set(HEARTBEAT_KEY.format(service="worker"), "1", ex=30)
    response = await api.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"]["matching"] is False


async def test_health_is_503_with_redis_false_when_redis_is_unreachable(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    real = api_app.state.redis
    # A port nothing listens on: the check must fail, not hang or crash.
    api_app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await api.get("/health")
    finally:
        await api_app.state.redis.aclose()
        api_app.state.redis = real
    assert response.status_code == 503
    assert response.json()["checks"]["redis"] is False
    assert response.json()["checks"]["database"] is True


async def test_metrics_serve_prometheus_text_with_brokerx_metrics(api: httpx.AsyncClient) -> None:
    await api.get("/health")
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "brokerx_process_memory_bytes" in response.text
    assert "brokerx_db_pool_connections" in response.text


async def test_request_metrics_are_what_dashboards_and_alerts_read(
    api: httpx.AsyncClient,
) -> None:
    """Per route template: requests by method and status, and latency by method (the
    series of infra/grafana and infra/prometheus/alerts.yml); nothing nobody reads."""
    unknown = "/api/v1/orders/6f1c1ae5-0000-4000-8000-000000000000"
    await api.delete(unknown)  # 401: no token, labelled with the route's template
    text = (await api.get("/metrics")).text
    assert (
        'http_requests_total{handler="/api/v1/orders/{order_id}",method="DELETE",status="4xx"}'
        in text
    )
    assert (
        'http_request_duration_seconds_count{handler="/api/v1/orders/{order_id}",method="DELETE"}'
        in text
    )
    for unread in ("http_request_size_bytes", "http_response_size_bytes", "_highr_"):
        assert unread not in text


async def test_request_id_is_echoed_or_generated(api: httpx.AsyncClient) -> None:
    echoed = await api.get(
        "/health", headers={"X-Request-ID": "req-123", "X-Correlation-ID": "corr-9"}
    )
    assert echoed.headers["x-request-id"] == "req-123"
    assert echoed.headers["x-correlation-id"] == "corr-9"
    generated = await api.get("/health")
    assert len(generated.headers["x-request-id"]) == 36


async def test_unknown_path_is_problem_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/does-not-exist")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"
