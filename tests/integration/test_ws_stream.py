"""The live stream `GET /api/v1/stream` over a real socket (API.md, "Live stream").

The api runs under uvicorn on a free port; the engine's side (XADD to `executions` and
`marketdata`, the `md:*` read models, its heartbeat) is played by the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed

from brokerx_api.settings import ApiSettings
from brokerx_api.stream.service import StreamOptions
from brokerx_core.messages import encode
from brokerx_core.observability.health import HEARTBEAT_KEY
from brokerx_core.streams import BOOK_KEY, EXECUTIONS_STREAM, QUOTE_KEY
from tests.conftest import settings_overrides
from tests.support.factories import create_client, create_session_token
from tests.support.live import (
    LiveApi,
    execution_report,
    market_update,
    open_stream,
    publish_marketdata,
    publish_report,
    recv_json,
    recv_until,
    serve_api,
    small_receive_buffer_socket,
    subscribe,
)
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")

ENGINE_HEARTBEAT = HEARTBEAT_KEY.format(service="matching")
QUEUE_SIZE = 50


@pytest.fixture
def queue_size() -> int:
    """Per-connection queue bound (`ws_queue_size`); small so tests reach it quickly."""
    return QUEUE_SIZE


@pytest.fixture
async def live(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    redis: Redis,
    instruments: None,
    queue_size: int,
) -> AsyncIterator[LiveApi]:
    await redis.set(ENGINE_HEARTBEAT, "1", ex=60)
    settings = ApiSettings(**settings_overrides(servers, database_url))
    options = StreamOptions(
        queue_size=queue_size,
        auth_timeout_seconds=0.5,
        status_interval_seconds=0.1,
        session_check_interval_seconds=0.2,
        close_timeout_seconds=10.0,
        read_block_ms=300,
    )
    async with serve_api(settings, options) as live_api:
        yield live_api


async def authed(live: LiveApi, engine: AsyncEngine, **kwargs: Any) -> tuple[Any, Any]:
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    ws = await open_stream(live, token, **kwargs)
    status = await recv_json(ws)
    assert status["type"] == "status"
    return client, ws


async def closed_with(ws: Any, timeout: float = 3.0) -> int | None:
    """Read until the server closes the connection; its close code (None: no close frame)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


def slow_reader(live: LiveApi) -> dict[str, Any]:
    """Connection options of a client that will stop reading: a tiny receive window, no
    compression (identical messages deflate to nothing), no client-side buffering, and no
    long wait for a closing handshake it may never read."""
    return {
        "sock": small_receive_buffer_socket(live.port),
        "max_queue": 1,
        "compression": None,
        "close_timeout": 0.5,
    }


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("brokerx_ws_messages_dropped_total", {"reason": reason}) or 0.0


# -- authentication -----------------------------------------------------------------------


async def test_auth_is_answered_then_the_current_status_follows(
    live: LiveApi, engine: AsyncEngine
) -> None:
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    async with await open_stream(live) as ws:
        await ws.send(json.dumps({"action": "auth", "token": token}))
        assert await recv_json(ws) == {"type": "authenticated"}
        assert await recv_json(ws) == {"type": "status", "level": "ok"}


@pytest.mark.parametrize(
    "first",
    [
        json.dumps({"action": "subscribe", "quotes": ["AAPL"]}),
        json.dumps({"action": "auth", "token": "not-a-jwt"}),
        json.dumps({"action": "auth"}),
        "{garbage",
    ],
    ids=["subscribe-first", "bad-token", "no-token", "not-json"],
)
async def test_anything_but_a_valid_auth_first_closes_4401(live: LiveApi, first: str) -> None:
    async with await open_stream(live) as ws:
        await ws.send(first)
        assert await closed_with(ws) == 4401


async def test_silence_after_connecting_closes_4401(live: LiveApi) -> None:
    async with await open_stream(live) as ws:  # auth timeout is 0.5 s here
        assert await closed_with(ws) == 4401


async def test_a_revoked_session_cannot_authenticate_and_is_closed_when_revoked_later(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    async with await open_stream(live, token) as ws:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE auth_session SET revoked_at = now() WHERE client_id = :c"),
                {"c": client.client_id},
            )
        await redis.delete(*[k async for k in redis.scan_iter("auth:session:*")])  # as logout does
        assert await closed_with(ws) == 4401
    async with await open_stream(live) as ws:
        await ws.send(json.dumps({"action": "auth", "token": token}))
        assert await closed_with(ws) == 4401


# -- subscriptions and snapshots --------------------------------------------------------------


async def test_subscribe_answers_the_state_then_a_snapshot_within_one_second(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    quote = {
        "symbol": "AAPL",
        "bid": "189.99",
        "bid_size": 300,
        "ask": "190.01",
        "ask_size": 200,
        "last": "190.00",
        "last_size": 5,
        "ts": "2024-05-01T14:30:00Z",
    }
    book = {
        "symbol": "AAPL",
        "bids": [["189.99", 300], ["189.98", 100]],
        "asks": [["190.01", 200]],
        "ts": "2024-05-01T14:30:00Z",
    }
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), json.dumps(quote))
    await redis.set(BOOK_KEY.format(symbol="AAPL"), json.dumps(book))
    _, ws = await authed(live, engine)
    async with ws:
        answer = await subscribe(ws, quotes=["aapl"], books=["AAPL"], orders=True)
        assert answer == {
            "type": "subscribed",
            "quotes": ["AAPL"],
            "books": ["AAPL"],
            "trades": [],
            "orders": True,
        }
        snapshot = {}
        while len(snapshot) < 2:
            message = await recv_json(ws, timeout=1.0)  # each within a second
            snapshot[message["type"]] = message
        assert {k: v for k, v in snapshot["quote"].items() if k != "ts"} == {
            "type": "quote",
            **{k: v for k, v in quote.items() if k != "ts"},
        }
        assert snapshot["book"]["bids"] == book["bids"]
        assert snapshot["book"]["asks"] == book["asks"]


async def test_snapshot_without_read_models_is_an_empty_quote_and_book(
    live: LiveApi, engine: AsyncEngine
) -> None:
    _, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, quotes=["MSFT"], books=["MSFT"])
        messages = {m["type"]: m for m in [await recv_json(ws), await recv_json(ws)]}
        assert messages["quote"]["symbol"] == "MSFT"
        assert messages["quote"]["bid"] is None
        assert messages["quote"]["ask"] is None
        assert messages["book"]["bids"] == []
        assert messages["book"]["asks"] == []


async def assert_nothing_else_queued(ws: Any, redis: Redis, trades_of: str) -> None:
    """Nothing more was queued for `ws` (no sleep: two barriers).

    A ping's pong comes next only if no control message (report, status, error) was
    queued before it. Market data waits in a lane of its own that the control lane
    overtakes, so a public trade of `trades_of` (subscribed) is then published: it
    must be the next message, as market data leaves in the order it was queued."""
    await ws.send(json.dumps({"action": "ping"}))
    assert await recv_json(ws, timeout=1.0) == {"type": "pong"}
    await publish_marketdata(
        redis, market_update(trades_of, bid=None, ask=None, trades=[("1.23", 7)])
    )
    marker = await recv_json(ws, timeout=1.0)
    assert (marker["type"], marker["symbol"], marker["price"], marker["quantity"]) == (
        "trade",
        trades_of,
        "1.23",
        7,
    )


async def test_a_trades_only_subscription_is_followed_by_a_quote_and_book_snapshot(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    quote = {"symbol": "AAPL", "bid": "189.99", "bid_size": 300, "ask": "190.01"}
    quote |= {"ask_size": 200, "last": "190.00", "last_size": 5, "ts": "2024-05-01T14:30:00Z"}
    book = {"symbol": "AAPL", "bids": [["189.99", 300]], "asks": [["190.01", 200]]}
    book["ts"] = "2024-05-01T14:30:00Z"
    await redis.set(QUOTE_KEY.format(symbol="AAPL"), json.dumps(quote))
    await redis.set(BOOK_KEY.format(symbol="AAPL"), json.dumps(book))
    _, ws = await authed(live, engine)
    async with ws:
        answer = await subscribe(ws, trades=["aapl"])
        assert (answer["quotes"], answer["books"], answer["trades"]) == ([], [], ["AAPL"])
        snapshot = [await recv_json(ws, timeout=1.0), await recv_json(ws, timeout=1.0)]
        assert sorted(m["type"] for m in snapshot) == ["book", "quote"]
        by_type = {m["type"]: m for m in snapshot}
        assert (by_type["quote"]["bid"], by_type["quote"]["last"]) == ("189.99", "190.00")
        assert by_type["book"]["bids"] == book["bids"]
        assert by_type["book"]["asks"] == book["asks"]
        await assert_nothing_else_queued(ws, redis, "AAPL")

        # Live, the subscription still carries trades only.
        update = market_update("AAPL", bid="190.10", trades=[("190.20", 3)])
        await publish_marketdata(redis, update)
        trade = await recv_json(ws, timeout=1.0)
        assert (trade["type"], trade["price"], trade["quantity"]) == ("trade", "190.20", 3)
        await assert_nothing_else_queued(ws, redis, "AAPL")


async def test_each_subscribed_symbol_gets_one_quote_and_one_book_snapshot(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    _, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, quotes=["MSFT"], books=["msft"], trades=["MSFT", "AAPL"])
        snapshot = [await recv_json(ws, timeout=1.0) for _ in range(4)]
        assert sorted((m["type"], m["symbol"]) for m in snapshot) == [
            ("book", "AAPL"),
            ("book", "MSFT"),
            ("quote", "AAPL"),
            ("quote", "MSFT"),
        ]
        await assert_nothing_else_queued(ws, redis, "AAPL")


async def test_live_market_data_reaches_subscribers_of_that_symbol_only(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    _, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, quotes=["AAPL"], books=["AAPL"], trades=["AAPL"])
        await recv_json(ws), await recv_json(ws)  # the (empty) snapshot
        await publish_marketdata(redis, market_update("MSFT", bid="419.00"))
        await publish_marketdata(
            redis,
            market_update(
                "AAPL",
                bid="190.10",
                bid_size=7,
                last="190.20",
                last_size=3,
                trades=[("190.20", 3), ("190.21", 4)],
                levels=2,
            ),
        )
        got = [await recv_json(ws, timeout=1.0) for _ in range(4)]
        assert all(m["symbol"] == "AAPL" for m in got)  # MSFT came first and was not sent
        by_type: dict[str, list[dict[str, Any]]] = {}
        for m in got:
            by_type.setdefault(m["type"], []).append(m)
        assert by_type["quote"][0]["bid"] == "190.10"
        assert by_type["quote"][0]["bid_size"] == 7
        assert by_type["quote"][0]["last"] == "190.20"
        assert by_type["book"][0]["bids"] == [["190.10", 7], ["190.09", 8]]
        assert [(t["price"], t["quantity"]) for t in by_type["trade"]] == [
            ("190.20", 3),
            ("190.21", 4),
        ]
        assert set(by_type["trade"][0]) == {"type", "symbol", "price", "quantity", "ts"}


async def test_unsubscribe_stops_that_channel_only(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    _, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, quotes=["AAPL", "MSFT"])
        for _ in range(4):  # the snapshot: a quote and a book of each
            await recv_json(ws)
        await ws.send(json.dumps({"action": "unsubscribe", "quotes": ["aapl"]}))
        answer = await recv_json(ws)
        assert answer == {
            "type": "unsubscribed",
            "quotes": ["MSFT"],
            "books": [],
            "trades": [],
            "orders": False,
        }
        await publish_marketdata(redis, market_update("AAPL"))
        await publish_marketdata(redis, market_update("MSFT", bid="419.00"))
        message = await recv_json(ws, timeout=1.0)
        assert (message["type"], message["symbol"]) == ("quote", "MSFT")


# -- execution reports --------------------------------------------------------------------


async def test_own_execution_report_arrives_within_one_second_and_only_to_its_owner(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    alice, alice_ws = await authed(live, engine)
    bob, bob_ws = await authed(live, engine)
    carol, carol_ws = await authed(live, engine)
    async with alice_ws, bob_ws, carol_ws:
        await subscribe(alice_ws, orders=True)
        await subscribe(bob_ws, orders=True)
        await subscribe(carol_ws, quotes=["TSLA"])  # no `orders`: reports are opt-in
        await recv_json(carol_ws), await recv_json(carol_ws)  # TSLA snapshot: quote, book

        report = execution_report(alice, event="partial_fill", quantity=10, client_order_id="a-1")
        await publish_report(redis, report)
        received = await recv_json(alice_ws, timeout=1.0)  # within a second
        assert received == {
            "type": "execution_report",
            "report_id": report.report_id,
            "order_id": str(report.order_id),
            "client_order_id": "a-1",
            "symbol": "AAPL",
            "side": "buy",
            "event": "partial_fill",
            "status": "partially_filled",
            "fill_price": "190.25",
            "fill_quantity": 5,
            "filled_quantity": 5,
            "leaves_quantity": 5,
            "avg_fill_price": "190.25",
            "trade_id": str(report.trade_id),
            "version": 1,
            "reason": None,
            "correlation_id": None,
            "ts": received["ts"],
        }

        # Reports are dispatched in stream order: Bob's own report is the first thing he
        # gets, so Alice's was never queued for him.
        await publish_report(redis, execution_report(bob, event="canceled", reason="requested"))
        bobs = await recv_json(bob_ws, timeout=1.0)
        assert bobs["type"] == "execution_report"
        assert bobs["event"] == "canceled"
        assert bobs["reason"] == "requested"
        # Carol's answer to a ping comes first: no report was queued before it.
        await carol_ws.send(json.dumps({"action": "ping"}))
        assert await recv_json(carol_ws) == {"type": "pong"}


async def test_a_report_published_twice_is_sent_once(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    alice, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, orders=True)
        report = execution_report(alice)
        await publish_report(redis, report)
        await publish_report(redis, report)
        await publish_report(redis, execution_report(alice, event="new"))
        first = await recv_json(ws, timeout=1.0)
        second = await recv_json(ws, timeout=1.0)
        assert (first["event"], second["event"]) == ("fill", "new")


async def test_every_connection_of_the_owner_gets_its_reports(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    alice = await create_client(engine)
    token = await create_session_token(live.app, alice.client_id)
    async with await open_stream(live, token) as web, await open_stream(live, token) as mobile:
        for ws in (web, mobile):
            await recv_json(ws)  # status
            await subscribe(ws, orders=True)
        await publish_report(redis, execution_report(alice))
        for ws in (web, mobile):
            assert (await recv_json(ws, timeout=1.0))["event"] == "fill"


# -- malformed messages -----------------------------------------------------------------------


async def test_malformed_messages_are_answered_with_errors_and_nothing_closes(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    alice, ws = await authed(live, engine)
    bob, bob_ws = await authed(live, engine)
    async with ws, bob_ws:
        await subscribe(bob_ws, orders=True)
        cases = [
            ("{not json", "invalid_json"),
            (json.dumps(["subscribe"]), "invalid_message"),
            (json.dumps({"action": "dance"}), "unknown_action"),
            (json.dumps({"action": "subscribe", "quotes": "AAPL"}), "invalid_message"),
            (json.dumps({"action": "subscribe", "orders": "yes"}), "invalid_message"),
            (json.dumps({"action": "subscribe", "quotes": ["AAPL", "NOPE"]}), "unknown_symbol"),
            (json.dumps({"action": "auth", "token": "x"}), "already_authenticated"),
        ]
        for raw, code in cases:
            await ws.send(raw)
            error = await recv_json(ws)
            assert error["type"] == "error"
            assert error["code"] == code, raw
            assert error["detail"]
        await ws.send(b"\x00binary")
        assert (await recv_json(ws))["code"] == "invalid_message"

        # The rejected subscribe changed nothing; the connection still works.
        answer = await subscribe(ws, orders=True)
        assert answer["quotes"] == []
        assert answer["orders"] is True
        await publish_report(redis, execution_report(alice))
        await publish_report(redis, execution_report(bob))
        assert (await recv_json(ws, timeout=1.0))["type"] == "execution_report"
        assert (await recv_json(bob_ws, timeout=1.0))["type"] == "execution_report"


# -- status -----------------------------------------------------------------------------------


async def test_status_turns_degraded_without_the_engine_heartbeat_and_recovers(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    _, ws = await authed(live, engine)  # authed() consumed the initial "ok"
    async with ws:
        await redis.delete(ENGINE_HEARTBEAT)
        message = await recv_json(ws, timeout=3.0)
        assert message == {"type": "status", "level": "degraded", "reason": "matching_unavailable"}
        await redis.set(ENGINE_HEARTBEAT, "1", ex=60)
        assert await recv_json(ws, timeout=3.0) == {"type": "status", "level": "ok"}


async def test_a_new_connection_learns_the_degraded_status_right_after_auth(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    await redis.delete(ENGINE_HEARTBEAT)
    stream = live.app.state.stream
    await eventually(lambda: _level(stream), lambda level: level == "degraded", timeout=3)
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    async with await open_stream(live, token) as ws:
        assert (await recv_json(ws))["level"] == "degraded"


async def _level(stream: Any) -> str:
    return str(stream.hub.status_level)


async def test_reports_flow_again_after_redis_forgets_the_streams(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    alice, ws = await authed(live, engine)
    async with ws:
        await subscribe(ws, orders=True)
        first = await publish_report(redis, execution_report(alice, event="new"))
        assert (await recv_json(ws, timeout=1.0))["event"] == "new"
        await redis.flushdb()
        await redis.set(ENGINE_HEARTBEAT, "1", ex=60)
        # The engine recreates the stream with its next XADD; within the same millisecond
        # the new entry gets the very id the api read last (the worst case, forced here).
        again = execution_report(alice, event="fill")
        await redis.xadd(EXECUTIONS_STREAM, encode(again), id=first)  # type: ignore[arg-type]
        message, _ = await recv_until(ws, lambda m: m["type"] == "execution_report", timeout=3.0)
        assert message["report_id"] == again.report_id
        # And later entries of the new stream follow as usual.
        later = execution_report(alice, event="canceled", reason="requested")
        await publish_report(redis, later)
        message, _ = await recv_until(ws, lambda m: m["type"] == "execution_report", timeout=1.0)
        assert message["report_id"] == later.report_id


# -- slow consumers ---------------------------------------------------------------------------


# A large bound: each update then pushes a thousand trades into the socket, which fills
# the kernel buffers (megabytes on loopback) in a few dozen updates.
@pytest.mark.parametrize("queue_size", [1000])
async def test_a_slow_consumer_gets_conflated_market_data_and_ends_on_the_latest_quote(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    client, slow = await authed(live, engine, **slow_reader(live))
    _, fast = await authed(live, engine)
    async with slow, fast:
        await subscribe(slow, quotes=["AAPL"], trades=["AAPL"])
        await subscribe(fast, quotes=["AAPL"])
        await recv_json(fast), await recv_json(fast)  # snapshot: quote, book
        conflated_before = dropped("conflated")
        # The slow client stops reading here. Flood it: every update carries trades (kept
        # one by one) and a new quote (conflated).
        sequence = 0
        while dropped("conflated") == conflated_before:
            sequence += 1
            await publish_marketdata(
                redis,
                market_update(
                    "AAPL", bid_size=sequence, trades=[("190.00", q) for q in range(1, 1001)]
                ),
            )
            # The fast client keeps up with every quote it is sent.
            expected = sequence
            await recv_until(fast, lambda m, n=expected: m["bid_size"] == n, timeout=1.0)
            assert sequence < 2_000, "the server never conflated for the slow client"
        final = sequence + 1
        await publish_marketdata(redis, market_update("AAPL", bid_size=final))
        await recv_until(fast, lambda m: m["bid_size"] == final, timeout=1.0)

        # The slow client resumes reading: fewer quotes than were published, the last of
        # them the latest state.
        quote, skipped = await recv_until(
            slow, lambda m: m["type"] == "quote" and m["bid_size"] == final, timeout=10.0
        )
        quotes = [m for m in skipped if m["type"] == "quote" and m["bid_size"] is not None]
        assert len(quotes) + 1 < final
        assert [q["bid_size"] for q in quotes] == sorted(q["bid_size"] for q in quotes)


async def test_a_slow_consumer_whose_reports_back_up_is_closed_4408_others_unaffected(
    live: LiveApi, engine: AsyncEngine, redis: Redis
) -> None:
    slow_client, slow = await authed(live, engine, **slow_reader(live))
    fast_client, fast = await authed(live, engine)
    async with slow, fast:
        await subscribe(slow, orders=True)
        await subscribe(fast, orders=True)
        disconnected_before = dropped("disconnected")
        sent = 0
        while dropped("disconnected") == disconnected_before:
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(100):
                    pipe.xadd(EXECUTIONS_STREAM, encode(execution_report(slow_client, event="new")))
                await pipe.execute()
            sent += 100
            # Meanwhile the normal client gets each of its reports within a second.
            mine = execution_report(fast_client, event="new")
            await publish_report(redis, mine)
            got = await recv_json(fast, timeout=1.0)
            assert got["report_id"] == mine.report_id
            assert sent < 100_000, "the slow consumer was never disconnected"
        # The slow client now reads what was buffered before the close, then the close code.
        assert await closed_with(slow, timeout=10.0) == 4408
        # The normal client is still served.
        mine = execution_report(fast_client, event="fill")
        await publish_report(redis, mine)
        assert (await recv_json(fast, timeout=1.0))["report_id"] == mine.report_id


# -- against the real engine ------------------------------------------------------------------


@pytest.mark.slow
async def test_rest_and_stream_show_what_the_engine_did(
    live: LiveApi, engine: AsyncEngine, redis: Redis, servers: ServerUrls, database_url: str
) -> None:
    from tests.support.engine import MatchingProcess, matching_settings
    from tests.support.trading import create_trader

    seller = await create_trader(engine, live.app, shares={"AAPL": 100})
    buyer = await create_trader(engine, live.app, cash="100000.00")
    # A separate process, as in production (and each process has its own metric registry).
    matching = MatchingProcess(matching_settings(servers, database_url)).start()
    try:
        await matching.wait_serving(4)
        await _trade_and_compare(live, engine, seller, buyer)
    finally:
        await matching.terminate()


async def _trade_and_compare(live: LiveApi, engine: AsyncEngine, seller: Any, buyer: Any) -> None:
    async with (
        httpx.AsyncClient(base_url=live.http_url) as http,
        await open_stream(live, buyer.token) as ws,
    ):
        await recv_json(ws)  # status
        await subscribe(ws, quotes=["AAPL"], books=["AAPL"], trades=["AAPL"], orders=True)

        async def place(who: Any, side: str, quantity: int, price: str) -> str:
            body = {"symbol": "AAPL", "side": side, "type": "limit", "quantity": quantity}
            response = await http.post(
                "/api/v1/orders", json=body | {"limit_price": price}, headers=who.headers
            )
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        await place(seller, "sell", 5, "190.50")
        await place(seller, "sell", 3, "190.60")
        await place(buyer, "buy", 10, "189.50")
        crossing = await place(buyer, "buy", 2, "190.50")

        expected_quote = {
            "symbol": "AAPL",
            "bid": "189.50",
            "bid_size": 10,
            "ask": "190.50",
            "ask_size": 3,
            "last": "190.50",
            "last_size": 2,
        }

        async def rest_quote() -> dict[str, Any]:
            body = (await http.get("/api/v1/marketdata/AAPL/quote")).json()
            return {k: v for k, v in body.items() if k != "ts"}

        await eventually(rest_quote, lambda q: q == expected_quote, timeout=10)
        book = (await http.get("/api/v1/marketdata/AAPL/book")).json()
        assert book["bids"] == [["189.50", 10]]
        assert book["asks"] == [["190.50", 3], ["190.60", 3]]
        trades = (await http.get("/api/v1/marketdata/AAPL/trades")).json()["items"]
        assert [(t["price"], t["quantity"]) for t in trades] == [("190.50", 2)]
        async with engine.connect() as conn:
            persisted = (await conn.execute(text("SELECT price, quantity FROM trade"))).one()
        assert (persisted.price, persisted.quantity) == (Decimal("190.50"), 2)

        # The stream told the buyer the same story, live.
        fill, seen = await recv_until(
            ws,
            lambda m: m["type"] == "execution_report" and m["event"] == "fill",
            timeout=5.0,
        )
        assert fill["order_id"] == crossing
        assert (fill["fill_price"], fill["fill_quantity"]) == ("190.50", 2)
        received = [*seen, fill]

        def told(messages: list[dict[str, Any]]) -> bool:
            quote = any(
                m["type"] == "quote"
                and {k: v for k, v in m.items() if k not in ("type", "ts")} == expected_quote
                for m in messages
            )
            trade = any(m["type"] == "trade" and m["price"] == "190.50" for m in messages)
            return quote and trade

        while not told(received):
            received.append(await recv_json(ws, timeout=5.0))
        await eventually(
            lambda: http.get("/api/v1/instruments/AAPL"),
            lambda r: r.json()["last_price"] == "190.50",
            timeout=3,
        )
