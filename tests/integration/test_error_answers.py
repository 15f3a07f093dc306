"""Error answers as API.md and the OpenAPI document give them: a body that does not
decode is a 422 `validation_error` on every endpoint, and exactly the operations the
document marks authenticated answer 401 without a token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.errors import PROBLEM_JSON
from tests.support.trading import Trader, create_trader

pytestmark = pytest.mark.usefixtures("instruments")

ORDER_ID = "00000000-0000-4000-8000-000000000000"
# (method, path, authenticated): bodies decoded by FastAPI, then by the endpoint itself.
BODY_ENDPOINTS = [
    ("POST", "/api/v1/clients", False),
    ("POST", "/api/v1/clients/verify", False),
    ("POST", "/api/v1/auth/login", False),
    ("PATCH", "/api/v1/me", True),
    ("POST", "/api/v1/orders", True),
    ("PATCH", f"/api/v1/orders/{ORDER_ID}", True),
    ("POST", "/api/v1/deposits", True),
]
UNDECODABLE = {
    "not_utf8": b'{"email": "\xff"}',
    "nested_too_deep": b"[" * 5000 + b"]" * 5000,
}


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="1000.00")


@pytest.mark.parametrize("body", sorted(UNDECODABLE))
@pytest.mark.parametrize(("method", "path", "authenticated"), BODY_ENDPOINTS)
async def test_a_body_that_does_not_decode_is_a_422_validation_error(
    api: httpx.AsyncClient,
    trader: Trader,
    method: str,
    path: str,
    authenticated: bool,
    body: str,
) -> None:
    headers = {"Content-Type": "application/json", "If-Match": "1"}
    if authenticated:
        headers |= trader.headers

    response = await api.request(method, path, content=UNDECODABLE[body], headers=headers)

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert problem["status"] == 422
    assert problem["errors"]


def _concrete(path: str) -> str:
    return path.replace("{order_id}", ORDER_ID).replace("{symbol}", "AAPL")


async def test_exactly_the_documented_authenticated_operations_answer_401_without_a_token(
    api: httpx.AsyncClient, api_app: Any
) -> None:
    document = api_app.openapi()
    for path, item in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            response = await api.request(
                method.upper(), _concrete(path), json={}, headers={"If-Match": "1"}
            )
            label = f"{method.upper()} {path}"
            documented = "security" in operation
            assert (response.status_code == 401) == documented, (label, response.text)
            assert str(response.status_code) in operation["responses"], (label, response.text)
            if documented:
                assert response.headers["content-type"] == PROBLEM_JSON
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["code"] == "unauthorized"


async def test_the_served_document_is_the_completed_one(
    api: httpx.AsyncClient, api_app: Any
) -> None:
    response = await api.get("/openapi.json")

    assert response.status_code == 200
    assert response.json() == api_app.openapi()
    assert "Problem" in response.json()["components"]["schemas"]
