"""The order write requests skip FastAPI's routing (`OrderFastPath`): a client must not be
able to tell. The same requests go to the api as it runs and to the same api with the
fast path taken out (every request routed), and the answers must be the same: status,
the headers a client reads, the body (ids and times aside)."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.order_fast_path import OrderFastPath
from tests.support.trading import Trader, create_trader, place

pytestmark = pytest.mark.usefixtures("instruments")

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")
SHOWN_HEADERS = ("content-type", "www-authenticate", "allow", "location", "idempotent-replayed")
ORDER = {"symbol": "AAPL", "side": "buy", "type": "limit", "quantity": 10, "limit_price": "190.00"}


@pytest.fixture
def routed_app(api_app: Any) -> Any:
    """The same running api with the fast path taken out: every request goes through the
    router (its middleware stack built again without `OrderFastPath`)."""
    kept = api_app.user_middleware
    api_app.user_middleware = [m for m in kept if m.cls is not OrderFastPath]
    try:
        stack = api_app.build_middleware_stack()
    finally:
        api_app.user_middleware = kept

    async def routed(scope: Any, receive: Any, send: Any) -> None:
        scope["app"] = api_app  # what Starlette's __call__ sets before its stack
        await stack(scope, receive, send)

    return routed


def requests(trader: Trader, order_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    auth = trader.headers
    one = f"/api/v1/orders/{order_id}"
    return [
        ("POST", "/api/v1/orders", {"json": ORDER, "headers": auth}),
        ("POST", "/api/v1/orders", {"json": {**ORDER, "client_order_id": "k"}, "headers": auth}),
        ("POST", "/api/v1/orders", {"json": {**ORDER, "client_order_id": "k"}, "headers": auth}),
        ("POST", "/api/v1/orders", {"content": b"{not json", "headers": auth}),
        ("POST", "/api/v1/orders", {"json": {**ORDER, "symbol": "NOPE"}, "headers": auth}),
        ("POST", "/api/v1/orders", {"json": {**ORDER, "limit_price": "190.001"}, "headers": auth}),
        ("POST", "/api/v1/orders", {"json": {**ORDER, "quantity": 10**9}, "headers": auth}),
        ("POST", "/api/v1/orders", {"json": ORDER}),
        ("POST", "/api/v1/orders", {"json": ORDER, "headers": {"Authorization": "Bearer x"}}),
        ("PATCH", one, {"json": {"quantity": 12}, "headers": auth}),
        ("PATCH", one, {"json": {"quantity": 12}, "headers": {**auth, "If-Match": "x"}}),
        ("PATCH", one, {"json": {"quantity": 0}, "headers": {**auth, "If-Match": "1"}}),
        ("PATCH", one, {"json": {"quantity": 12}, "headers": {**auth, "If-Match": "1"}}),
        ("PATCH", "/api/v1/orders/nope", {"json": {}, "headers": {**auth, "If-Match": "1"}}),
        (
            "PATCH",
            "/api/v1/orders/nope",
            {"json": {"quantity": 5}, "headers": {**auth, "If-Match": "1"}},
        ),
        ("DELETE", one, {"headers": {**auth, "If-Match": "7"}}),
        ("DELETE", "/api/v1/orders/nope", {"headers": auth}),
        ("DELETE", one, {"headers": auth}),
        # Not the fast path's: the router answers them, in both apps.
        ("GET", one, {"headers": auth}),
        ("POST", one, {"json": ORDER, "headers": auth}),
        ("PUT", "/api/v1/orders", {"json": ORDER, "headers": auth}),
        ("POST", "/api/v1/orders/", {"json": ORDER, "headers": auth}),
        ("PATCH", f"{one}/x", {"json": {}, "headers": {**auth, "If-Match": "1"}}),
    ]


def seen_by_a_client(response: httpx.Response, order_id: str) -> tuple[Any, ...]:
    text = response.text.replace(order_id, "<order>")
    text = TIMESTAMP.sub("<time>", UUID.sub("<uuid>", text))
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    headers = tuple(
        (name, UUID.sub("<uuid>", response.headers[name]).replace(order_id, "<order>"))
        for name in SHOWN_HEADERS
        if name in response.headers
    )
    return response.status_code, headers, "x-request-id" in response.headers, body


async def answers(app: Any, api_app: Any, engine: AsyncEngine) -> list[tuple[Any, ...]]:
    trader = await create_trader(engine, api_app, cash="100000.00")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        order_id = (await place(client, trader, quantity=10, price="190.00"))["id"]
        seen = []
        for method, path, options in requests(trader, order_id):
            response = await client.request(method, path, **options)
            seen.append(seen_by_a_client(response, order_id))
    return seen


async def test_the_fast_path_answers_exactly_as_the_router(
    api_app: Any, routed_app: Any, engine: AsyncEngine
) -> None:
    fast = await answers(api_app, api_app, engine)
    routed = await answers(routed_app, api_app, engine)

    for number, (mine, theirs) in enumerate(zip(fast, routed, strict=True)):
        assert mine == theirs, f"request {number}: {requests.__name__}"
    statuses = [answer[0] for answer in fast]
    assert statuses == [
        *(201, 201, 200, 422, 422, 422, 422, 401, 401),
        *(428, 422, 422, 202, 404, 404),
        *(409, 404, 202),
        *(200, 405, 405, 307, 404),
    ]
    assert all(answer[2] for answer in fast)  # every answer carries its X-Request-ID


@pytest.mark.parametrize(
    ("method", "path", "root_path", "expected"),
    [
        ("POST", "/api/v1/orders", "", "create_order"),
        ("PATCH", "/api/v1/orders/abc", "", "amend_order"),
        ("DELETE", "/api/v1/orders/abc", "", "cancel_order"),
        ("GET", "/api/v1/orders", "", None),
        ("DELETE", "/api/v1/orders", "", None),
        ("GET", "/api/v1/orders/abc", "", None),
        ("POST", "/api/v1/orders/abc", "", None),
        ("POST", "/api/v1/orders/", "", None),
        ("PATCH", "/api/v1/orders/abc/def", "", None),
        ("POST", "/api/v1/ordersx", "", None),
        ("POST", "/api/v1/orders", "/behind-a-proxy", None),
    ],
)
def test_only_the_three_order_writes_take_the_fast_path(
    method: str, path: str, root_path: str, expected: str | None
) -> None:
    fast_path = OrderFastPath(lambda scope, receive, send: None, prefix="/api/v1")  # type: ignore[arg-type,return-value]
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path}

    route = fast_path._route(scope)

    assert (route[0].__name__ if route else None) == expected
