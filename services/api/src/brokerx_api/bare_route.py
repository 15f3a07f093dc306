"""`BareRequestRoute`: endpoints that take the Request (and path parameters) and return a
Response skip FastAPI's request handler.

FastAPI's handler solves dependencies — and parses the query string, the headers and
the cookies for every request, even for an endpoint that declares none — then checks
and renders the return value. The order write endpoints read what they need from the
request and answer a `Response` themselves, so for them that work is pure overhead
(~5 % of the api's CPU under load). A route of this class whose endpoint is marked with
`@bare_request` is called directly with the request and its path parameters (as
strings, which is all these endpoints declare). Everything around it is unchanged:
routing, the body limit, the middleware, the exception handlers (problem+json), and the
OpenAPI document, which FastAPI still builds from the endpoint's signature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])
_MARK = "__bare_request__"


def bare_request(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint `(request: Request, **path parameters: str) -> Response`."""
    setattr(endpoint, _MARK, True)
    return endpoint


class BareRequestRoute(APIRoute):
    """An APIRoute that calls `@bare_request` endpoints without FastAPI's handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if not getattr(self.endpoint, _MARK, False):
            return super().get_route_handler()
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handler
