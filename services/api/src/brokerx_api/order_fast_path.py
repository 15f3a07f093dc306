"""The order write requests answered without FastAPI's routing (the api's hot path).

`POST /api/v1/orders`, `PATCH /api/v1/orders/{order_id}` and `DELETE
/api/v1/orders/{order_id}` are ~95 % of the api's requests under load, and their
endpoints take the bare Request (`bare_route`). Routing them through the app still
cost about half of the framework's share of a request (`bench/api_overhead.py`,
cProfile): the app's exception middleware and exit stack, then FastAPI's nested
routers, which match the path against the routes of every included router.

`OrderFastPath` is the innermost middleware: a request whose method and exact path are
one of those three goes straight to its endpoint, inside an exception middleware with
the app's own handlers (so errors render exactly as they do through the router: the
same problem+json, the same 503). Everything outside it still runs — the body limit,
the request metrics with their route label, the request ids, the 500 handler. Any other
request (other methods, other paths, a trailing slash, a `root_path`) goes on to the
app as before, and the routes stay registered for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from brokerx_api.orders import endpoints

Handler = Callable[..., Awaitable[Response]]


class OrderFastPath:
    """Pure ASGI middleware; `prefix` is where the orders router is mounted."""

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self._collection = f"{prefix}/orders"
        self._item_prefix = f"{prefix}/orders/"
        self._inner: ASGIApp | None = None

    def _route(self, scope: Scope) -> tuple[Handler, dict[str, str]] | None:
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        method, path = scope["method"], scope["path"]
        if path == self._collection:
            return (endpoints.create_order, {}) if method == "POST" else None
        if not path.startswith(self._item_prefix):
            return None
        order_id = path[len(self._item_prefix) :]
        if not order_id or "/" in order_id:
            return None
        if method == "PATCH":
            return endpoints.amend_order, {"order_id": order_id}
        if method == "DELETE":
            return endpoints.cancel_order, {"order_id": order_id}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["brokerx.fast_route"] = route
        await self._handling_errors(scope["app"])(scope, receive, send)

    def _handling_errors(self, app: Any) -> ASGIApp:
        """`_serve` inside an exception middleware with the app's handlers, as Starlette
        builds the app's own (the 500 handler stays with the outer error middleware)."""
        if self._inner is None:
            handlers = {
                key: handler
                for key, handler in app.exception_handlers.items()
                if key not in (500, Exception)
            }
            self._inner = ExceptionMiddleware(_serve, handlers=handlers)
        return self._inner


async def _serve(scope: Scope, receive: Receive, send: Send) -> None:
    endpoint, path_params = scope["brokerx.fast_route"]
    scope["path_params"] = path_params
    response: Response = await endpoint(Request(scope, receive, send), **path_params)
    await response(scope, receive, send)
