"""A tiny HTTP server for `/health` and `/metrics` in the non-HTTP services."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HealthFn = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def create_ops_app(health: HealthFn) -> Starlette:
    """Starlette app serving `/health` (from `health`) and `/metrics` (global registry)."""

    async def health_endpoint(request: Request) -> Response:
        status, body = await health()
        return JSONResponse(body, status_code=status)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/health", health_endpoint),
            Route("/metrics", metrics_endpoint),
        ]
    )


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def create_ops_server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server to run inside the service's own event loop (`await serve()`)."""
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    return EmbeddedServer(config)
