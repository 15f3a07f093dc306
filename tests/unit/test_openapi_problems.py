"""The OpenAPI document lists the api's real error answers (`brokerx_api.openapi`)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi import FastAPI

from brokerx_api.app import create_app
from brokerx_api.errors import PROBLEM_JSON
from brokerx_api.openapi import (
    AUTHENTICATES_DIRECTLY,
    OPERATION_ERRORS,
    describe_answers,
    operations,
    requires_client,
)
from brokerx_api.settings import ApiSettings

PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# API.md, "Conventions": every endpoint needs a Bearer token except these.
PUBLIC = {
    "GET /health",
    "POST /api/v1/clients",
    "POST /api/v1/clients/verify",
    "POST /api/v1/clients/verify/resend",
    "POST /api/v1/auth/login",
    "POST /api/v1/auth/mfa/verify",
    "POST /api/v1/auth/refresh",
    "GET /api/v1/instruments",
    "GET /api/v1/instruments/{symbol}",
    "GET /api/v1/marketdata/{symbol}/quote",
    "GET /api/v1/marketdata/{symbol}/book",
    "GET /api/v1/marketdata/{symbol}/trades",
}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app(ApiSettings(log_json=True, log_level="WARNING"))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def _api_operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _operations(document).items() if " /api/v1/" in k}


def test_the_problem_schema_is_a_component(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    problem = schemas["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "code"]
    assert problem["additionalProperties"] is True
    assert problem["properties"]["errors"]["items"]["required"] == ["loc", "msg"]
    # FastAPI's validation answer is documented nowhere any more.
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas


def test_every_operation_with_input_documents_its_422_as_problem_json(
    document: dict[str, Any],
) -> None:
    for label, operation in _api_operations(document).items():
        takes_input = bool(operation.get("parameters")) or "requestBody" in operation
        if takes_input:
            assert operation["responses"]["422"]["content"] == PROBLEM, label
        else:  # nothing to validate: no 422 can happen
            assert "422" not in operation["responses"], label


def test_every_error_is_documented_as_problem_json(document: dict[str, Any]) -> None:
    for label, operation in _api_operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response["content"] == PROBLEM, (label, status)
                assert response["description"], (label, status)


def test_authenticated_operations_document_401_and_the_bearer_scheme(
    document: dict[str, Any],
) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The `access_token` of a login",
    }
    operations_ = _operations(document)
    authenticated = {k for k, v in operations_.items() if v.get("security")}
    assert authenticated == set(operations_) - PUBLIC
    for label in authenticated:
        operation = operations_[label]
        assert operation["security"] == [{"bearerAuth": []}], label
        unauthorized = operation["responses"]["401"]
        assert unauthorized["content"] == PROBLEM, label
        assert "WWW-Authenticate" in unauthorized["headers"], label


def test_the_order_write_endpoints_are_found_authenticated(app: FastAPI) -> None:
    # They call `current_client(request)` instead of depending on `CurrentClient`:
    # every endpoint that does must be marked, or its 401 goes undocumented.
    routes = dict(operations(app.routes))
    calls_it = {
        label
        for label, route in routes.items()
        if "current_client" in route.endpoint.__code__.co_names
    }
    assert calls_it == AUTHENTICATES_DIRECTLY
    assert all(requires_client(label, routes[label]) for label in calls_it)


def test_every_api_operation_documents_503(document: dict[str, Any]) -> None:
    for label, operation in _api_operations(document).items():
        unavailable = operation["responses"]["503"]
        assert unavailable["content"] == PROBLEM, label
        assert "Retry-After" in unavailable["headers"], label
    health = document["paths"]["/health"]["get"]["responses"]
    assert set(health) == {"200", "503"}
    assert list(health["503"]["content"]) == ["application/json"]


def test_the_domain_errors_of_api_md_are_documented(document: dict[str, Any]) -> None:
    operations_ = _operations(document)
    assert set(OPERATION_ERRORS) <= set(operations_)
    assert set(AUTHENTICATES_DIRECTLY) <= set(operations_)
    expected = {
        "POST /api/v1/clients": {"201", "409", "422", "429", "503"},
        "POST /api/v1/clients/verify": {"200", "400", "409", "422", "429", "503"},
        "POST /api/v1/clients/verify/resend": {"202", "422", "429", "503"},
        "POST /api/v1/auth/login": {"200", "401", "403", "422", "423", "429", "503"},
        "POST /api/v1/auth/mfa/verify": {"200", "401", "422", "423", "429", "503"},
        "POST /api/v1/auth/refresh": {"200", "401", "422", "503"},
        "POST /api/v1/auth/mfa/totp/enable": {"200", "400", "401", "422", "503"},
    }
    for label, statuses in expected.items():
        assert set(operations_[label]["responses"]) == statuses, label
    login = operations_["POST /api/v1/auth/login"]["responses"]
    assert "Retry-After" in login["423"]["headers"]
    assert "Retry-After" in login["429"]["headers"]
    assert "security" not in operations_["POST /api/v1/auth/login"]
    # A TOTP secret the server's keys cannot decrypt is a 503, not a wrong code.
    for label in ("POST /api/v1/auth/mfa/verify", "POST /api/v1/auth/mfa/totp/enable"):
        unavailable = operations_[label]["responses"]["503"]
        assert "TOTP secret cannot be decrypted" in unavailable["description"], label
        assert "Retry-After" in unavailable["headers"], label


def test_post_orders_documents_its_order_answers_and_idempotency_key(
    document: dict[str, Any],
) -> None:
    operation = document["paths"]["/api/v1/orders"]["post"]
    responses = operation["responses"]
    order = {"$ref": "#/components/schemas/OrderOut"}
    assert responses["201"]["content"]["application/json"]["schema"] == order
    assert responses["200"]["content"]["application/json"]["schema"] == order  # a replay
    assert responses["200"]["description"].startswith("Replay")
    assert responses["409"]["description"] == "`client_order_id_reused`"
    assert responses["422"]["description"].startswith("`validation_error`, `unknown_symbol`")
    assert set(responses) == {"200", "201", "401", "409", "422", "503"}
    assert {"name": "Idempotency-Key", "in": "header"}.items() <= operation["parameters"][0].items()
    assert operation["requestBody"]["content"]["application/json"]["schema"]


def test_declared_descriptions_are_kept(document: dict[str, Any]) -> None:
    deposits = document["paths"]["/api/v1/deposits"]["get"]["responses"]
    assert deposits["401"]["description"] == "Missing, invalid or expired access token"
    assert deposits["422"]["description"].startswith("`validation_error` (limit out of 1..500)")
    quote = document["paths"]["/api/v1/marketdata/{symbol}/quote"]["get"]["responses"]
    assert quote["404"]["description"] == "Unknown symbol (`unknown_symbol`)"


def test_the_document_is_completed_once_and_completing_it_again_changes_nothing(
    app: FastAPI, document: dict[str, Any]
) -> None:
    assert app.openapi() is document
    assert app.openapi_schema is document
    again = describe_answers(copy.deepcopy(document), app.routes)
    assert again == document
