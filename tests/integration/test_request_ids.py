"""Every answer carries X-Request-ID (API.md, Conventions), the 500s included, and the id
it carries is the one the request's logs carry."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DBAPIError

from brokerx_api.orders import endpoints as order_endpoints

UUID_LENGTH = 36


@pytest.fixture
async def client(api_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client that receives the api's 500 answers instead of the exception behind them."""
    transport = httpx.ASGITransport(app=api_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def failing_route(api_app: Any) -> str:
    """A route whose endpoint fails unexpectedly (a bug)."""

    async def broken() -> None:
        raise RuntimeError("a bug")

    api_app.add_api_route("/api/v1/test-broken", broken, methods=["GET"])
    return "/api/v1/test-broken"


def logged_request_ids(caplog: pytest.LogCaptureFixture, event: str) -> list[Any]:
    return [
        record.msg.get("request_id")
        for record in caplog.records
        if isinstance(record.msg, dict) and record.msg.get("event") == event
    ]


def assert_internal_error(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "internal_error"


async def test_a_500_echoes_the_request_id_that_its_log_carries(
    client: httpx.AsyncClient, failing_route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = await client.get(
        failing_route, headers={"X-Request-ID": "req-500", "X-Correlation-ID": "corr-500"}
    )
    assert_internal_error(response)
    assert response.headers.get_list("x-request-id") == ["req-500"]
    assert response.headers.get_list("x-correlation-id") == ["corr-500"]
    assert logged_request_ids(caplog, "unhandled_error") == ["req-500"]


async def test_a_500_without_a_request_id_carries_the_generated_one(
    client: httpx.AsyncClient, failing_route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    response = await client.get(failing_route)
    assert_internal_error(response)
    generated = response.headers["x-request-id"]
    assert len(generated) == UUID_LENGTH
    assert response.headers["x-correlation-id"] == generated
    assert logged_request_ids(caplog, "unhandled_error") == [generated]


async def test_a_500_of_the_order_fast_path_carries_the_request_id(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    for name in ("create_order", "amend_order", "cancel_order"):
        monkeypatch.setattr(order_endpoints, name, broken)
    order = f"/api/v1/orders/{uuid.uuid4()}"
    for method, path in (("POST", "/api/v1/orders"), ("PATCH", order), ("DELETE", order)):
        response = await client.request(method, path, headers={"X-Request-ID": f"fast-{method}"})
        assert_internal_error(response)
        assert response.headers.get_list("x-request-id") == [f"fast-{method}"]


async def test_a_500_from_an_unrecognised_database_error_carries_the_request_id_once(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered inside the middleware (the infrastructure handler): one header, not two."""

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise DBAPIError("SELECT 1", {}, Exception("not a connection error"))

    monkeypatch.setattr(order_endpoints, "create_order", broken)
    response = await client.post("/api/v1/orders", headers={"X-Request-ID": "db-500"})
    assert_internal_error(response)
    assert response.headers.get_list("x-request-id") == ["db-500"]


@pytest.mark.parametrize(
    "sent",
    [
        "req-123",
        "x" * 200,  # long ids (trace ids, signed ids) are echoed up to 200 characters
        "checkout 42 / retry 3",  # spaces and punctuation are printable ASCII
        '{"a": [1, 2]} ~!@#$%^&*()',
    ],
)
async def test_a_printable_request_id_is_echoed(client: httpx.AsyncClient, sent: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    "sent",
    [
        b"x" * 201,  # too long
        b"line\rbreak",  # control characters could forge a log line or split a header
        b"tab\tinside",
        b"esc\x1b[31m",
        "caf\u00e9".encode("latin-1"),  # not ASCII
        b"   ",  # nothing but whitespace
    ],
)
async def test_any_other_request_id_is_replaced_by_a_fresh_one(
    client: httpx.AsyncClient, sent: bytes
) -> None:
    response = await client.get("/health", headers=[(b"X-Request-ID", sent)])
    replaced = response.headers["x-request-id"]
    assert len(replaced) == UUID_LENGTH
    assert replaced == str(uuid.UUID(replaced))


async def test_a_long_request_id_is_echoed_but_not_used_as_the_stored_correlation_id(
    client: httpx.AsyncClient,
) -> None:
    """A correlation id is stored with orders and audit events (64 characters at most)."""
    long_id = "r" * 100
    response = await client.get("/health", headers={"X-Request-ID": long_id})
    assert response.headers["x-request-id"] == long_id
    assert len(response.headers["x-correlation-id"]) == UUID_LENGTH
    sent = await client.get("/health", headers={"X-Request-ID": long_id, "X-Correlation-ID": "c-1"})
    assert sent.headers["x-correlation-id"] == "c-1"
