"""`BareRequestRoute`: marked endpoints get the request and path parameters directly;
the router's other endpoints keep FastAPI's handling; errors render the same way."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, FastAPI, Request, Response

from brokerx_api.bare_route import BareRequestRoute, bare_request
from brokerx_api.errors import NotFound, install_error_handlers

router = APIRouter(route_class=BareRequestRoute)


@router.delete("/things/{thing_id}", status_code=202)
@bare_request
async def delete_thing(request: Request, thing_id: str) -> Response:
    if thing_id == "missing":
        raise NotFound("no such thing")
    body = f'{{"id":"{thing_id}","q":"{request.query_params.get("q", "")}"}}'
    return Response(body, status_code=202, media_type="application/json")


@router.get("/things")
async def list_things(limit: int = 10) -> dict[str, int]:
    return {"limit": limit}


def _client() -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router, prefix="/api")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_bare_endpoint_gets_its_path_parameter_and_the_request() -> None:
    async with _client() as client:
        response = await client.delete("/api/things/abc?q=1")
    assert response.status_code == 202
    assert response.json() == {"id": "abc", "q": "1"}


async def test_a_bare_endpoints_errors_are_problem_json() -> None:
    async with _client() as client:
        response = await client.delete("/api/things/missing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


async def test_unmarked_endpoints_of_the_router_keep_fastapis_validation() -> None:
    async with _client() as client:
        ok = await client.get("/api/things?limit=3")
        bad = await client.get("/api/things?limit=many")
    assert ok.json() == {"limit": 3}
    assert bad.status_code == 422
    assert bad.json()["code"] == "validation_error"


def test_the_order_write_endpoints_are_bare() -> None:
    from brokerx_api.orders import endpoints

    for endpoint in (endpoints.create_order, endpoints.cancel_order, endpoints.amend_order):
        assert getattr(endpoint, "__bare_request__", False), endpoint.__name__
