"""The request-metrics label (route template) comes from a cache: same answer as the library."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.requests import Request

from brokerx_api.request_metrics import CachedRouteInstrumentatorMiddleware, RouteTemplates

router = APIRouter()


@router.post("/orders")
async def create() -> None: ...


@router.delete("/orders/{order_id}")
async def cancel(order_id: str) -> None: ...


@router.get("/orders/{order_id}/fills")
async def fills(order_id: str) -> None: ...


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(router, prefix="/api/v1")

    @app.get("/health")
    async def health() -> None: ...

    return app


def _scope(app: FastAPI, method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "app": app,
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/orders"),
        ("GET", "/api/v1/orders"),  # wrong method: the library still names the route
        ("DELETE", "/api/v1/orders/8c5e0f4e-0a51-4d7e-9f0a-1c2b3d4e5f60"),
        ("GET", "/api/v1/orders/abc/fills"),
        ("GET", "/health"),
        ("GET", "/nowhere"),
    ],
)
def test_same_template_as_the_library_first_and_second_time(method: str, path: str) -> None:
    app = _app()
    templates = RouteTemplates()
    scope = _scope(app, method, path)
    expected = get_route_name(Request(scope), should_include_root_path=False)
    assert templates.name(app, scope) == expected
    assert templates.name(app, scope) == expected  # answered from the cache when static


def test_routes_added_later_are_seen() -> None:
    app = _app()
    templates = RouteTemplates()
    assert templates.name(app, _scope(app, "GET", "/late")) is None

    @app.get("/late")
    async def late() -> None: ...

    assert templates.name(app, _scope(app, "GET", "/late")) == "/late"


def test_the_app_uses_the_cached_middleware() -> None:
    from brokerx_api.app import create_app
    from brokerx_api.settings import ApiSettings

    app = create_app(ApiSettings())
    classes = [m.cls for m in app.user_middleware]
    assert CachedRouteInstrumentatorMiddleware in classes
