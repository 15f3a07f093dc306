"""Request/correlation ids: taken from headers or generated, bound to logs, echoed back."""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokerx_core.observability.logging import MAX_CORRELATION_ID_LENGTH, bind_ids, clean_id


class RequestIdMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path).

    It echoes the ids on every response that passes through it. The 500 answer of an
    unhandled exception does not: Starlette renders it outside every user middleware, so
    that handler sets the ids itself, from `request_ids` (brokerx_api.errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id, correlation_id = _ids_from_headers(scope)
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        scope["state"]["correlation_id"] = correlation_id
        structlog.contextvars.clear_contextvars()
        bind_ids(request_id, correlation_id)
        extra = [
            (b"x-request-id", request_id.encode()),
            (b"x-correlation-id", correlation_id.encode()),
        ]

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_ids)


def request_ids(scope: Scope) -> tuple[str, str]:
    """The request's (request id, correlation id): those `RequestIdMiddleware` gave it,
    or, if it failed before reaching the middleware, fresh ones from its headers."""
    state = scope.get("state") or {}
    request_id, correlation_id = state.get("request_id"), state.get("correlation_id")
    if request_id and correlation_id:
        return str(request_id), str(correlation_id)
    return _ids_from_headers(scope)


def _ids_from_headers(scope: Scope) -> tuple[str, str]:
    headers = dict(scope.get("headers") or [])
    request_id = clean_id(_header(headers, b"x-request-id"))
    # Without a correlation id of its own the request's id is used; one too long for the
    # columns that store it (audit, orders) is replaced, not cut.
    correlation_id = clean_id(
        _header(headers, b"x-correlation-id") or request_id, MAX_CORRELATION_ID_LENGTH
    )
    return request_id, correlation_id


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value else None
