"""Request metrics (prometheus-fastapi-instrumentator) with a cheaper route lookup.

The instrumentator labels each request with its route template (`/api/v1/orders/{order_id}`).
To find it, it flattens the app's routes (FastAPI keeps included routers nested) and
matches the request against every one of them, before the app matches it again: about
a tenth of the api's CPU per request in `bench/api_overhead.py`. Here the flattened list
is built once, and a path that resolved to a template without parameters (most hot
routes: `/api/v1/orders`) is answered from a dict. Labels are exactly the library's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator, metrics
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from prometheus_fastapi_instrumentator.routing import _effective_routes, _get_route_name
from starlette.middleware import Middleware
from starlette.requests import Request

# Static paths remembered (each is a route of the app, so the set is bounded anyway).
MAX_STATIC_PATHS = 1024


class RouteTemplates:
    """Route template of a request: the instrumentator's answer, computed with less work."""

    def __init__(self) -> None:
        self._routes: list[Any] | None = None
        self._routes_key: tuple[int, int] | None = None
        self._static: dict[str, str] = {}

    def name(self, app: Any, scope: dict[str, Any]) -> str | None:
        path: str = scope["path"]
        found = self._static.get(path)
        if found is not None:
            return found
        key = (id(app.routes), len(app.routes))
        if self._routes is None or key != self._routes_key:
            self._routes, self._routes_key = _effective_routes(app.routes), key
            self._static.clear()
        name = _get_route_name(scope, self._routes)
        if name == path and len(self._static) < MAX_STATIC_PATHS:
            self._static[path] = name
        return name


class CachedRouteInstrumentatorMiddleware(PrometheusInstrumentatorMiddleware):
    """The library's middleware with `RouteTemplates` for the handler label."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._templates = RouteTemplates()

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        if self.should_include_root_path and request.scope.get("root_path"):
            return super()._get_handler(request)
        name = self._templates.name(request.scope["app"], request.scope)
        return (name, True) if name else (request.url.path, False)


# Latency buckets of `http_request_duration_seconds`: the library default's, kept so
# that dashboards and recorded series stay comparable.
LATENCY_BUCKETS = (0.1, 0.5, 1)


_INSTRUMENTATIONS: list[Callable[[metrics.Info], None]] = []


def _instrumentations() -> list[Callable[[metrics.Info], None]]:
    if not _INSTRUMENTATIONS:
        for made in (
            metrics.requests(),
            metrics.latency(should_include_status=False, buckets=LATENCY_BUCKETS),
        ):
            if made is not None:  # None: already registered by someone else
                _INSTRUMENTATIONS.append(made)
    return _INSTRUMENTATIONS


def instrument(app: FastAPI, *, excluded_handlers: list[str]) -> None:
    """`Instrumentator(...).instrument(app)`, with our middleware class in its place.

    Two of the library's five default metrics are kept, the two that dashboards and
    alerts read (infra/): `http_requests_total` (method, status, handler) and
    `http_request_duration_seconds` (method, handler). The request and response size
    summaries and the label-less high-resolution histogram cost every request a label
    lookup and mmap writes (multiprocess mode) and nothing reads them. The metrics are
    registered once per process and shared by every app it creates (the library's
    own default leaves a second app of the process unmeasured).
    """
    instrumentator = Instrumentator(excluded_handlers=excluded_handlers)
    instrumentator.add(*_instrumentations())
    instrumentator.instrument(app)
    for index, middleware in enumerate(app.user_middleware):
        if middleware.cls is PrometheusInstrumentatorMiddleware:
            app.user_middleware[index] = Middleware(
                CachedRouteInstrumentatorMiddleware, *middleware.args, **middleware.kwargs
            )
