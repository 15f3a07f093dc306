"""The OpenAPI document, completed with the answers FastAPI cannot see.

FastAPI documents what it knows of: the success responses and the `responses=` an
endpoint declares. Every error, though, is rendered by `brokerx_api.errors` as
problem+json, and many come from places FastAPI does not look into (the Bearer check,
the throttles, a database that is down). `install_openapi` post-processes the generated
document once so that it lists every answer the api really gives (API.md):

* a `Problem` schema (the problem+json body) used by every error response;
* 422 `validation_error` as problem+json (not FastAPI's `HTTPValidationError`) on
  every operation that takes parameters or a body;
* 401 and the bearer security requirement on authenticated operations;
* 503 `service_unavailable` on every `/api/v1` operation (PostgreSQL or Redis down);
* the domain errors (400, 401, 403, 409, 423, 429, ...) of the endpoints that do not
  declare them themselves (`OPERATION_ERRORS`, taken from API.md).

Responses already documented keep their description and success schemas.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from starlette.routing import BaseRoute

from brokerx_api.auth.deps import current_client
from brokerx_api.errors import PROBLEM_JSON

API_PATHS = "/api/"
BEARER_SCHEME = "bearerAuth"
PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457 problem+json). `code` is stable; validation errors"
    " add `errors`; some errors add fields of their own (`retry_after`, `band`, `required`,"
    " `available`, `tick_size`, `version`, `order_id`).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "URI of the problem type"},
        "title": {"type": "string"},
        "status": {"type": "integer", "description": "The HTTP status"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable snake_case error code"},
        "errors": {
            "type": "array",
            "description": "Validation errors: where (`loc`) and what (`msg`)",
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                    "msg": {"type": "string"},
                },
            },
        },
        "retry_after": {"type": "integer", "description": "Seconds to wait (423, 429)"},
    },
    "additionalProperties": True,
}

# The endpoints that call `current_client(request)` themselves instead of depending on
# `CurrentClient` (the order write path skips FastAPI's dependency solving).
AUTHENTICATES_DIRECTLY = frozenset(
    {
        "POST /api/v1/orders",
        "PATCH /api/v1/orders/{order_id}",
        "DELETE /api/v1/orders/{order_id}",
    }
)

_RATE_LIMITED = "`rate_limited`: too many attempts; retry after `Retry-After` seconds"
_LIST_422 = "`validation_error` (a parameter out of range), `invalid_cursor`"
_TOTP_503 = (
    "`service_unavailable`: PostgreSQL or Redis is unreachable, or the stored TOTP secret"
    " cannot be decrypted (the server's TOTP keys are misconfigured; no failure is counted);"
    " retry after `Retry-After` seconds"
)

# Errors of the endpoints that do not declare them (API.md, per endpoint). A status the
# endpoint already documents is left as it is, except FastAPI's default 422.
OPERATION_ERRORS: dict[str, dict[int, str]] = {
    "POST /api/v1/clients": {
        409: "`email_taken`",
        422: "`validation_error`, `weak_password` (8+ characters with upper- and lower-case"
        " letters and a digit, not a common one), `underage` (younger than 18)",
        429: _RATE_LIMITED,
    },
    "POST /api/v1/clients/verify": {
        400: "`invalid_code`: wrong or expired (24 h) code",
        409: "`already_active`",
        429: _RATE_LIMITED,
    },
    "POST /api/v1/clients/verify/resend": {429: _RATE_LIMITED},
    "POST /api/v1/auth/login": {
        401: "`invalid_credentials` (the same for an unknown e-mail)",
        403: "`account_not_active`",
        423: "`account_locked`: too many failed passwords; retry after `Retry-After` seconds",
        429: _RATE_LIMITED,
    },
    "POST /api/v1/auth/mfa/verify": {
        401: "`invalid_code`; `invalid_token` (MFA token invalid, expired or already used)",
        423: "`account_locked`: too many wrong codes; retry after `Retry-After` seconds",
        429: _RATE_LIMITED,
        503: _TOTP_503,
    },
    "POST /api/v1/auth/refresh": {401: "`invalid_token`: invalid, expired or spent"},
    "POST /api/v1/auth/mfa/totp/enable": {
        400: "`invalid_code` (or no TOTP setup started)",
        503: _TOTP_503,
    },
    "GET /api/v1/orders": {422: _LIST_422},
    "GET /api/v1/trades": {422: _LIST_422},
}

_DEFAULT_DESCRIPTIONS = {
    401: "`unauthorized`: missing, invalid or expired access token",
    422: "`validation_error`: a parameter or the body is invalid (`errors` says where)",
    503: "`service_unavailable`: PostgreSQL or Redis is unreachable; nothing was changed,"
    " retry after `Retry-After` seconds",
}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
_HEADERS: dict[int, dict[str, Any]] = {423: _RETRY_AFTER, 429: _RETRY_AFTER, 503: _RETRY_AFTER}


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document.

    FastAPI's own generator still builds (and caches in `app.openapi_schema`) the
    document; it is completed once, the first time it is returned.
    """
    generate = app.openapi
    described: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not described or described[0] is not document:
            describe_answers(document, app.routes)
            described[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def describe_answers(document: dict[str, Any], routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """Complete `document` (in place, idempotent) with the api's real error answers."""
    components = document.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = copy.deepcopy(PROBLEM_SCHEMA)
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The `access_token` of a login",
    }
    for label, route in operations(routes):
        method, path = label.split(" ", 1)
        operation = document.get("paths", {}).get(path, {}).get(method.lower())
        if operation is not None:
            _describe_operation(label, operation, authenticated=requires_client(label, route))
    _drop_unused_schemas(document, ("HTTPValidationError", "ValidationError"))
    return document


def operations(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, RouteContext]]:
    """(`"METHOD /path"`, route) of every documented operation, included routers too."""
    for context in iter_route_contexts(routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        for method in sorted(context.methods or ()):
            yield f"{method} {context.path_format}", context


def requires_client(label: str, route: APIRoute | RouteContext) -> bool:
    """True when the operation answers 401 without a valid access token."""
    return label in AUTHENTICATES_DIRECTLY or _depends_on(route.dependant, current_client)


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _describe_operation(label: str, operation: dict[str, Any], *, authenticated: bool) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if not label.split(" ", 1)[1].startswith(API_PATHS):
        _describe_health(responses)
        return
    declared = OPERATION_ERRORS.get(label, {})
    takes_input = bool(operation.get("parameters")) or "requestBody" in operation
    if takes_input:
        if "HTTPValidationError" in json.dumps(responses.get("422", {})):
            del responses["422"]  # FastAPI's default answer: not what the api sends
        _add_problem(responses, 422, declared.get(422, _DEFAULT_DESCRIPTIONS[422]))
    if authenticated:
        _add_problem(responses, 401, _DEFAULT_DESCRIPTIONS[401], _WWW_AUTHENTICATE)
        operation["security"] = [{BEARER_SCHEME: []}]
    for status, description in declared.items():
        _add_problem(responses, status, description)
    _add_problem(responses, 503, _DEFAULT_DESCRIPTIONS[503])
    for key in list(responses):  # the errors endpoints declared, without a schema
        if key.isdigit() and int(key) >= 400:
            _add_problem(responses, int(key), "")
    operation["responses"] = dict(sorted(responses.items()))


def _add_problem(
    responses: dict[str, Any],
    status: int,
    description: str,
    headers: dict[str, Any] | None = None,
) -> None:
    """Document `status` as a problem+json answer; an existing one keeps its description."""
    response = responses.setdefault(str(status), {"description": description})
    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
    headers = headers or _HEADERS.get(status)
    if headers:
        response.setdefault("headers", {}).update(headers)


def _describe_health(responses: dict[str, Any]) -> None:
    ok = responses.get("200", {})
    responses.setdefault(
        "503",
        {
            "description": "A dependency is down: its check is `false`",
            "content": copy.deepcopy(ok.get("content", {})),
        },
    )


def _drop_unused_schemas(document: dict[str, Any], names: Sequence[str]) -> None:
    schemas = document.get("components", {}).get("schemas", {})
    for name in names:
        if name not in schemas:
            continue
        others = {k: v for k, v in document.items() if k != "components"}
        others["schemas"] = {k: v for k, v in schemas.items() if k != name}
        if f'"#/components/schemas/{name}"' not in json.dumps(others):
            del schemas[name]
