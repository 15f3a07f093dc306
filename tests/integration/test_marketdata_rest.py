"""Instruments and market data over REST (API.md, "Instruments and market data").

The engine's Redis read models (`md:quote|book|trades:<SYMBOL>`) are written here by hand,
in the contract's format (docs/trading.md, "Read models in Redis").
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.streams import BOOK_KEY, QUOTE_KEY, TRADES_KEY

pytestmark = pytest.mark.usefixtures("instruments")

QUOTE = {
    "symbol": "AAPL",
    "bid": "189.99",
    "bid_size": 300,
    "ask": "190.01",
    "ask_size": 200,
    "last": "190.00",
    "last_size": 50,
    "ts": "2024-05-01T14:30:00.123000Z",
}
BOOK = {
    "symbol": "AAPL",
    "bids": [[f"{189.99 - i / 100:.2f}", 100 + i] for i in range(10)],
    "asks": [[f"{190.01 + i / 100:.2f}", 200 + i] for i in range(10)],
    "ts": "2024-05-01T14:30:00.123000Z",
}


async def test_instruments_are_public_and_listed_with_their_trading_data(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/api/v1/instruments")
    assert response.status_code == 200
    items = response.json()["items"]
    symbols = [i["symbol"] for i in items]
    assert {"AAPL", "MSFT", "TSLA"} <= set(symbols)
    assert symbols == sorted(symbols)
    aapl = next(i for i in items if i["symbol"] == "AAPL")
    assert aapl == {
        "symbol": "AAPL",
        "name": "Apple Inc.",
        "tick_size": "0.01",
        "reference_price": "190.00",
        "last_price": None,
        "status": "active",
    }


async def test_instrument_by_symbol_is_case_insensitive_and_unknown_is_404(
    api: httpx.AsyncClient,
) -> None:
    upper = await api.get("/api/v1/instruments/MSFT")
    lower = await api.get("/api/v1/instruments/msft")
    assert upper.status_code == lower.status_code == 200
    assert upper.json() == lower.json()
    assert upper.json()["reference_price"] == "420.00"

    missing = await api.get("/api/v1/instruments/NOPE")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["code"] == "unknown_symbol"


async def test_instrument_shows_the_persisted_last_price(
    api_app: Any, api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE instrument SET last_price = 191.5, last_trade_at = now()"
                " WHERE symbol = 'AAPL'"
            )
        )
    response = await api.get("/api/v1/instruments/AAPL")
    assert response.json()["last_price"] == "191.50"


async def test_quote_reads_the_engine_read_model(api: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), json.dumps(QUOTE))
    response = await api.get("/api/v1/marketdata/aapl/quote")
    assert response.status_code == 200
    body = response.json()
    assert {k: v for k, v in body.items() if k != "ts"} == {
        k: v for k, v in QUOTE.items() if k != "ts"
    }
    assert body["ts"].startswith("2024-05-01T14:30:00.123")


async def test_quote_without_read_model_is_empty_with_the_instrument_last_price(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE instrument SET last_price = 421 WHERE symbol = 'MSFT'"))
    body = (await api.get("/api/v1/marketdata/MSFT/quote")).json()
    assert body["symbol"] == "MSFT"
    assert body["bid"] is None
    assert body["bid_size"] is None
    assert body["ask"] is None
    assert body["ask_size"] is None
    assert body["last"] == "421.00"
    assert body["last_size"] is None


async def test_quote_with_one_empty_side_has_nulls(api: httpx.AsyncClient, redis: Redis) -> None:
    quote = {**QUOTE, "ask": None, "ask_size": None}
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), json.dumps(quote))
    body = (await api.get("/api/v1/marketdata/AAPL/quote")).json()
    assert body["ask"] is None
    assert body["ask_size"] is None
    assert body["bid"] == "189.99"


async def test_book_honours_depth_and_defaults_to_ten(api: httpx.AsyncClient, redis: Redis) -> None:
    await redis.set(BOOK_KEY.format(symbol="AAPL"), json.dumps(BOOK))
    full = (await api.get("/api/v1/marketdata/AAPL/book")).json()
    assert full["symbol"] == "AAPL"
    assert full["bids"] == BOOK["bids"]
    assert full["asks"] == BOOK["asks"]
    top3 = (await api.get("/api/v1/marketdata/AAPL/book", params={"depth": 3})).json()
    assert top3["bids"] == BOOK["bids"][:3]
    assert top3["asks"] == BOOK["asks"][:3]
    assert top3["bids"][0] == ["189.99", 100]  # best bid first, [price, qty]


@pytest.mark.parametrize("depth", ["0", "51", "-1", "ten"])
async def test_book_depth_outside_1_to_50_is_422(api: httpx.AsyncClient, depth: str) -> None:
    response = await api.get("/api/v1/marketdata/AAPL/book", params={"depth": depth})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_book_without_read_model_is_empty(api: httpx.AsyncClient) -> None:
    body = (await api.get("/api/v1/marketdata/TSLA/book", params={"depth": 50})).json()
    assert body == {"symbol": "TSLA", "bids": [], "asks": [], "ts": None}


async def test_trades_are_newest_first_and_limited(api: httpx.AsyncClient, redis: Redis) -> None:
    key = TRADES_KEY.format(symbol="AAPL")
    for i in range(5):  # the engine LPUSHes: the newest ends up first
        await redis.lpush(
            key,
            json.dumps({"price": f"190.0{i}", "quantity": 10 + i, "ts": f"2024-05-01T14:30:0{i}Z"}),
        )
    body = (await api.get("/api/v1/marketdata/AAPL/trades")).json()
    assert [t["price"] for t in body["items"]] == ["190.04", "190.03", "190.02", "190.01", "190.00"]
    assert body["items"][0]["quantity"] == 14
    assert body["items"][0]["ts"].startswith("2024-05-01T14:30:04")
    assert body["next_cursor"] is None
    two = (await api.get("/api/v1/marketdata/AAPL/trades", params={"limit": 2})).json()
    assert [t["price"] for t in two["items"]] == ["190.04", "190.03"]
    empty = (await api.get("/api/v1/marketdata/MSFT/trades")).json()
    assert empty["items"] == []


@pytest.mark.parametrize("kind", ["quote", "book", "trades"])
async def test_market_data_of_an_unknown_symbol_is_404(api: httpx.AsyncClient, kind: str) -> None:
    response = await api.get(f"/api/v1/marketdata/ZZZZ/{kind}")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_symbol"


async def test_a_corrupt_read_model_is_treated_as_missing_not_a_500(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), "{not json")
    await redis.set(BOOK_KEY.format(symbol="AAPL"), json.dumps({"bids": "nope"}))
    quote = await api.get("/api/v1/marketdata/AAPL/quote")
    book = await api.get("/api/v1/marketdata/AAPL/book")
    assert quote.status_code == book.status_code == 200
    assert quote.json()["bid"] is None
    assert book.json()["bids"] == []


async def test_market_data_is_503_when_redis_is_unreachable(
    api_app: Any, api: httpx.AsyncClient
) -> None:
    real = api_app.state.redis
    api_app.state.redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        response = await api.get("/api/v1/marketdata/AAPL/quote")
    finally:
        await api_app.state.redis.aclose()
        api_app.state.redis = real
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response.headers["retry-after"] == "1"  # as for every other 503


async def test_engine_prices_are_shown_like_every_other_price(
    api: httpx.AsyncClient, redis: Redis
) -> None:
    # The engine writes prices at the 4-decimal storage scale.
    quote = {**QUOTE, "bid": "189.9900", "ask": "190.0125", "last": "190.0000"}
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), json.dumps(quote))
    await redis.set(
        BOOK_KEY.format(symbol="AAPL"),
        json.dumps({**BOOK, "bids": [["189.9900", 5]], "asks": [["190.0125", 7]]}),
    )
    body = (await api.get("/api/v1/marketdata/AAPL/quote")).json()
    assert (body["bid"], body["ask"], body["last"]) == ("189.99", "190.0125", "190.00")
    book = (await api.get("/api/v1/marketdata/AAPL/book")).json()
    assert book["bids"] == [["189.99", 5]]
    assert book["asks"] == [["190.0125", 7]]
