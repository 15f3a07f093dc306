"""Reading and canceling orders over HTTP (the engine is not running: where a test needs
an engine outcome it writes it to the database directly)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.streams import order_stream_for
from tests.support.trading import (
    Trader,
    count_rows,
    create_trader,
    finish_order,
    place,
    record_fill,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")


@pytest.fixture
async def trader(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00", shares={"MSFT": 500})


@pytest.fixture
async def other(engine: AsyncEngine, api_app: Any) -> Trader:
    return await create_trader(engine, api_app, cash="100000.00", shares={"AAPL": 500})


# --- reading -------------------------------------------------------------------------


async def test_get_order_shows_its_fills(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, other: Trader
) -> None:
    bought = await place(api, trader, quantity=10, price="190.00")
    sold = await place(api, other, side="sell", quantity=10, price="189.50")
    trade_id = await record_fill(engine, bought, sold, "189.50", 4)

    response = await api.get(f"/api/v1/orders/{bought['id']}", headers=trader.headers)

    assert response.status_code == 200
    order = response.json()
    assert order["status"] == "partially_filled"
    assert order["filled_quantity"] == 4
    assert order["leaves_quantity"] == 6
    assert order["avg_fill_price"] == "189.50"
    assert len(order["fills"]) == 1
    fill = order["fills"][0]
    assert fill["trade_id"] == str(trade_id)
    assert fill["price"] == "189.50"
    assert fill["quantity"] == 4
    assert fill["ts"].endswith("Z")


async def test_a_new_order_has_no_fills(api: httpx.AsyncClient, trader: Trader) -> None:
    placed = await place(api, trader)

    response = await api.get(f"/api/v1/orders/{placed['id']}", headers=trader.headers)

    assert response.json()["fills"] == []
    assert response.json()["status"] == "pending_new"


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_another_client_s_order_is_not_found(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    trader: Trader,
    other: Trader,
    method: str,
) -> None:
    theirs = await place(api, other, side="sell", price="191.00")
    commands_before = len(await stream_commands(redis))

    response = await api.request(
        method,
        f"/api/v1/orders/{theirs['id']}",
        headers={**trader.headers, "If-Match": "1"},
        json={"quantity": 5} if method == "PATCH" else None,
    )

    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"
    assert len(await stream_commands(redis)) == commands_before
    assert await count_rows(engine, "outbox") == 1


@pytest.mark.parametrize("order_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_malformed_or_unknown_order_id_is_not_found(
    api: httpx.AsyncClient, trader: Trader, order_id: str
) -> None:
    for method in ("GET", "DELETE"):
        response = await api.request(method, f"/api/v1/orders/{order_id}", headers=trader.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "order_not_found"


async def test_list_filters_by_status_and_symbol(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader
) -> None:
    aapl = await place(api, trader)
    msft = await place(api, trader, symbol="MSFT", side="sell", price="420.00")
    done = await place(api, trader, price="189.00")
    await finish_order(engine, uuid.UUID(done["id"]), "canceled")

    async def ids(query: str) -> list[str]:
        response = await api.get(f"/api/v1/orders{query}", headers=trader.headers)
        assert response.status_code == 200
        assert response.json()["next_cursor"] is None
        return [o["id"] for o in response.json()["items"]]

    assert await ids("") == [done["id"], msft["id"], aapl["id"]]  # newest first
    assert await ids("?status=all") == [done["id"], msft["id"], aapl["id"]]
    assert await ids("?status=open") == [msft["id"], aapl["id"]]
    assert await ids("?status=closed") == [done["id"]]
    assert await ids("?symbol=MSFT") == [msft["id"]]
    assert await ids("?symbol=aapl&status=open") == [aapl["id"]]


async def test_list_shows_only_the_client_s_own_orders(
    api: httpx.AsyncClient, trader: Trader, other: Trader
) -> None:
    await place(api, other, side="sell", price="191.00")

    response = await api.get("/api/v1/orders", headers=trader.headers)

    assert response.json() == {"items": [], "next_cursor": None}


async def test_list_pages_with_a_cursor(api: httpx.AsyncClient, trader: Trader) -> None:
    placed = [(await place(api, trader, quantity=q))["id"] for q in range(1, 6)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = (await api.get(f"/api/v1/orders{query}", headers=trader.headers)).json()
        assert len(body["items"]) <= 2
        seen += [o["id"] for o in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(placed))


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?limit=0", "validation_error"),
        ("?limit=501", "validation_error"),
        ("?status=done", "validation_error"),
        ("?cursor=garbage", "invalid_cursor"),
        ("?cursor=WzFd", "invalid_cursor"),
    ],
)
async def test_bad_list_parameters_are_refused(
    api: httpx.AsyncClient, trader: Trader, query: str, code: str
) -> None:
    response = await api.get(f"/api/v1/orders{query}", headers=trader.headers)

    assert response.status_code == 422
    assert response.json()["code"] == code


async def test_a_trades_cursor_is_not_an_orders_cursor(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, other: Trader
) -> None:
    bought = await place(api, trader, quantity=10)
    for _ in range(2):
        sold = await place(api, other, side="sell", quantity=10, price="190.00")
        await record_fill(engine, bought, sold, "190.00", 1)
    trades = (await api.get("/api/v1/trades?limit=1", headers=trader.headers)).json()

    response = await api.get(
        f"/api/v1/orders?cursor={trades['next_cursor']}", headers=trader.headers
    )

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_cursor"


async def test_trades_lists_the_client_s_fills_from_its_side(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, other: Trader
) -> None:
    bought = await place(api, trader, quantity=10, price="190.00")
    sold = await place(api, other, side="sell", quantity=10, price="190.00")
    first = await record_fill(engine, bought, sold, "190.00", 3)
    msft_sell = await place(api, trader, symbol="MSFT", side="sell", quantity=5, price="420.00")
    msft_buy = await place(api, other, symbol="MSFT", quantity=5, price="420.00")
    second = await record_fill(engine, msft_buy, msft_sell, "420.00", 4)

    mine = (await api.get("/api/v1/trades", headers=trader.headers)).json()
    theirs = (await api.get("/api/v1/trades?symbol=AAPL", headers=other.headers)).json()
    paged = (await api.get("/api/v1/trades?limit=1", headers=trader.headers)).json()
    rest = (
        await api.get(
            f"/api/v1/trades?limit=1&cursor={paged['next_cursor']}", headers=trader.headers
        )
    ).json()

    assert [(t["trade_id"], t["side"], t["symbol"]) for t in mine["items"]] == [
        (str(second), "sell", "MSFT"),
        (str(first), "buy", "AAPL"),
    ]
    assert mine["items"][1] | {"ts": None} == {
        "trade_id": str(first),
        "order_id": bought["id"],
        "symbol": "AAPL",
        "side": "buy",
        "price": "190.00",
        "quantity": 3,
        "ts": None,
    }
    assert [(t["trade_id"], t["side"]) for t in theirs["items"]] == [(str(first), "sell")]
    assert [t["trade_id"] for t in paged["items"] + rest["items"]] == [str(second), str(first)]
    assert rest["next_cursor"] is None


# --- cancel --------------------------------------------------------------------------


async def test_cancel_sends_a_cancel_command(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader)

    response = await api.delete(f"/api/v1/orders/{placed['id']}", headers=trader.headers)

    assert response.status_code == 202
    assert response.json()["id"] == placed["id"]
    assert response.json()["status"] == "pending_new"  # the engine cancels it
    [_, (stream, command)] = await stream_commands(redis)
    assert command.type == "cancel"
    assert command.order_id == uuid.UUID(placed["id"])
    assert command.version == 1
    assert stream == order_stream_for("AAPL", 4)
    assert await count_rows(engine, "outbox") == 2


async def test_cancel_checks_if_match_when_given(
    api: httpx.AsyncClient, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader)

    stale = await api.delete(
        f"/api/v1/orders/{placed['id']}", headers={**trader.headers, "If-Match": "7"}
    )
    current = await api.delete(
        f"/api/v1/orders/{placed['id']}", headers={**trader.headers, "If-Match": '"1"'}
    )

    assert stale.status_code == 409
    assert stale.json()["code"] == "version_conflict"
    assert current.status_code == 202
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order", "cancel"]


async def test_cancel_of_a_terminal_order_is_refused(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader
) -> None:
    placed = await place(api, trader)
    await finish_order(engine, uuid.UUID(placed["id"]), "canceled")

    response = await api.delete(f"/api/v1/orders/{placed['id']}", headers=trader.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "order_not_cancelable"
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order"]


async def test_cancel_all_requests_a_cancel_for_every_open_order(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader, other: Trader
) -> None:
    open_ids = {
        (await place(api, trader))["id"],
        (await place(api, trader, symbol="MSFT", side="sell", price="420.00"))["id"],
    }
    done = await place(api, trader)
    await finish_order(engine, uuid.UUID(done["id"]), "canceled")
    await place(api, other, side="sell", price="191.00")

    response = await api.delete("/api/v1/orders", headers=trader.headers)

    assert response.status_code == 202
    assert response.json() == {"requested": 2}
    cancels = [c for _, c in await stream_commands(redis) if c.type == "cancel"]
    assert {str(c.order_id) for c in cancels} == open_ids
    assert len({c.outbox_id for c in cancels}) == 2


async def test_cancel_all_with_nothing_open(api: httpx.AsyncClient, trader: Trader) -> None:
    response = await api.delete("/api/v1/orders", headers=trader.headers)

    assert response.status_code == 202
    assert response.json() == {"requested": 0}
