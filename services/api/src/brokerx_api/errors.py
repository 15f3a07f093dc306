"""Domain errors and their RFC 9457 problem+json rendering (one place for every endpoint)."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from brokerx_api.middleware import request_ids
from brokerx_core.observability.logging import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    bind_ids,
    get_logger,
)

PROBLEM_JSON = "application/problem+json"
log = get_logger(__name__)


class DomainError(Exception):
    """An error a client caused or must know about; rendered as problem+json."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}
        self.extra = extra or {}


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"https://brokerx.dev/problems/{code.replace('_', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Authentication required"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class ValidationFailed(DomainError):
    status, code, title = 422, "validation_error", "Invalid request"


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(DomainError):
    status, code, title = 503, "service_unavailable", "Service temporarily unavailable"


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def _location(loc: tuple[Any, ...]) -> list[Any]:
    return [part for part in loc if part != "body"] or list(loc)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem(
        exc.status, exc.code, exc.title, exc.detail, headers=exc.headers, extra=exc.extra
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": _location(tuple(e.get("loc", ()))), "msg": e.get("msg", "")} for e in exc.errors()
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if errors else "invalid"
    return problem(422, "validation_error", "Invalid request", detail, extra={"errors": errors})


# FastAPI's answer (400) to a JSON body it cannot decode at all: not UTF-8, or nested
# deeper than the interpreter's recursion limit. A body that is merely not JSON is
# already its 422 `json_invalid`.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def _body_not_json() -> JSONResponse:
    # Every body that does not decode is a 422 `validation_error`, whichever endpoint
    # decoded it (FastAPI or the endpoint itself): docs/decisions.md.
    return problem(
        422,
        "validation_error",
        "Invalid request",
        "body: invalid JSON",
        extra={"errors": [{"loc": ["body"], "msg": "invalid JSON"}]},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        return _body_not_json()
    code = _STATUS_CODES.get(exc.status_code, "error")
    title = str(exc.detail) if exc.detail else code.replace("_", " ").capitalize()
    return problem(
        exc.status_code, code, title, str(exc.detail), headers=getattr(exc, "headers", None)
    )


async def _dependency_down(request: Request, exc: Exception) -> JSONResponse:
    # PostgreSQL or Redis is unreachable or restarting: the request changed nothing
    # (its transaction did not commit), so the client may retry.
    log.warning("dependency_unavailable", path=request.url.path, error=type(exc).__name__)
    return problem(
        503,
        "service_unavailable",
        "Service temporarily unavailable",
        "A backing service is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    )


def _is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean 'the database/Redis is not reachable right now'."""
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)):
        return True
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", "").startswith(
        ("08", "57P")  # connection exception; operator intervention (admin shutdown)
    ):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and _is_connection_error(cause)


def _sqlstate(exc: BaseException | None) -> str:
    """The PostgreSQL SQLSTATE somewhere in the exception chain ('' when none)."""
    seen = 0
    while exc is not None and seen < 10:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(state, str):
            return state
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
        seen += 1
    return ""


async def _infrastructure_error(request: Request, exc: Exception) -> JSONResponse:
    # Registered by class so Starlette answers without re-raising (its catch-all
    # `Exception` handler re-raises after responding).
    if _is_connection_error(exc):
        return await _dependency_down(request, exc)
    if _sqlstate(exc).startswith("22"):
        # Data exception: PostgreSQL refused a value the client sent (a NUL character,
        # an out-of-range number). The transaction rolled back: nothing changed.
        return problem(
            422,
            "validation_error",
            "Invalid request",
            "A value in the request is not acceptable (invalid character or out of range)",
            extra={"errors": []},
        )
    log.exception("unhandled_error", path=request.url.path)
    return _internal_error()


def _internal_error(headers: dict[str, str] | None = None) -> JSONResponse:
    return problem(
        500, "internal_error", "Internal error", "An unexpected error occurred", headers=headers
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Run by Starlette's ServerErrorMiddleware, outside every user middleware: the
    # request-id middleware never sees this answer, so the ids are set here (the same
    # ones it bound to the request's logs).
    request_id, correlation_id = request_ids(request.scope)
    bind_ids(request_id, correlation_id)
    log.exception("unhandled_error", path=request.url.path)
    return _internal_error({REQUEST_ID_HEADER: request_id, CORRELATION_ID_HEADER: correlation_id})


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as problem+json."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for infrastructure_error in (
        DBAPIError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        RedisConnectionError,
        RedisTimeoutError,
        PoolTimeoutError,
        OSError,
    ):
        app.add_exception_handler(infrastructure_error, _infrastructure_error)
    app.add_exception_handler(Exception, _unexpected_error)
