"""Live-stream test helpers: the api served for real by uvicorn on a free port, WebSocket
clients, and the engine's messages built by hand (clients and sessions come from
tests/support/factories.py).

The in-process `api` fixture (httpx ASGITransport) cannot speak WebSocket, so these tests
run the app under `uvicorn.Server` in the test's own event loop and connect with the
`websockets` client library, exactly as a browser or a trading script would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import uvicorn
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from brokerx_core.messages import (
    BookLevel,
    ExecutionReport,
    MarketDataUpdate,
    PublicTrade,
    encode,
)
from brokerx_core.streams import EXECUTIONS_STREAM, MARKETDATA_STREAM
from tests.support.smtp import free_port


@dataclass
class LiveApi:
    app: Any
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/stream"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serve_api(settings: Any, stream_options: Any = None) -> AsyncIterator[LiveApi]:
    """Run `create_app(settings)` under uvicorn (lifespan on) until the block ends."""
    from brokerx_api.app import create_app
    from brokerx_api.coalescing import CoalescingHttpToolsProtocol

    app = create_app(settings)
    if stream_options is not None:
        app.state.stream_options = stream_options
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        http=CoalescingHttpToolsProtocol,  # as brokerx_api.__main__ serves it
        log_config=None,
        access_log=False,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        timeout_graceful_shutdown=3,
    )
    async with uvicorn_serving(config):
        yield LiveApi(app, port)


@asynccontextmanager
async def uvicorn_serving(config: uvicorn.Config) -> AsyncIterator[None]:
    """`uvicorn.Server(config)` in this event loop, from started until the block ends."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise its error
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


class Owner(Protocol):
    """Whoever owns an order: a `ClientFixture` of tests/support/factories.py will do."""

    @property
    def client_id(self) -> uuid.UUID: ...

    @property
    def account_id(self) -> uuid.UUID: ...


async def open_stream(live: LiveApi, token: str | None = None, **kwargs: Any) -> ClientConnection:
    """A WebSocket on /api/v1/stream; authenticated (answer consumed) when a token is given."""
    ws = await connect(live.ws_url, **kwargs)
    if token is not None:
        await ws.send(json.dumps({"action": "auth", "token": token}))
        assert await recv_json(ws) == {"type": "authenticated"}
    return ws


async def recv_json(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    """The next server message (fails after `timeout` seconds)."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    message = json.loads(raw)
    assert isinstance(message, dict)
    return message


async def recv_until(
    ws: ClientConnection,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 2.0,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until a message matches; (that message, the ones skipped before it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    skipped: list[dict[str, Any]] = []
    while True:
        message = await recv_json(ws, max(0.001, deadline - loop.time()))
        if predicate(message):
            return message, skipped
        skipped.append(message)


async def subscribe(ws: ClientConnection, **channels: Any) -> dict[str, Any]:
    """Send a subscribe action; return the `subscribed` answer (skipping status messages)."""
    await ws.send(json.dumps({"action": "subscribe", **channels}))
    answer, _ = await recv_until(ws, lambda m: m["type"] in ("subscribed", "error"))
    return answer


def execution_report(
    client: Owner,
    *,
    event: str = "fill",
    order_id: uuid.UUID | None = None,
    symbol: str = "AAPL",
    side: str = "buy",
    quantity: int = 10,
    fill_price: str | None = "190.25",
    client_order_id: str | None = None,
    reason: str | None = None,
) -> ExecutionReport:
    """A report as the engine would publish it for one of the client's orders."""
    order_id = order_id or uuid.uuid4()
    filled = quantity if event == "fill" else (quantity // 2 if event == "partial_fill" else 0)
    status = {
        "new": "new",
        "partial_fill": "partially_filled",
        "fill": "filled",
        "canceled": "canceled",
        "expired": "expired",
    }.get(event, "rejected")
    fills = event in ("fill", "partial_fill")
    return ExecutionReport(
        report_id=f"{order_id}:1:{filled}:{event}",
        order_id=order_id,
        client_order_id=client_order_id,
        account_id=client.account_id,
        client_id=client.client_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        event=event,  # type: ignore[arg-type]
        status=status,
        fill_price=Decimal(fill_price) if fills and fill_price else None,
        fill_quantity=filled if fills else None,
        trade_id=uuid.uuid4() if fills else None,
        filled_quantity=filled,
        leaves_quantity=0 if event != "partial_fill" else quantity - filled,
        avg_fill_price=Decimal(fill_price) if fills and fill_price else None,
        version=1,
        reason=reason,
        ts=datetime.now(UTC),
    )


def market_update(
    symbol: str = "AAPL",
    *,
    bid: str | None = "190.00",
    bid_size: int | None = 100,
    ask: str | None = "190.05",
    ask_size: int | None = 200,
    last: str | None = None,
    last_size: int | None = None,
    trades: list[tuple[str, int]] | None = None,
    levels: int = 1,
) -> MarketDataUpdate:
    """A conflated market-data update as the engine publishes it after a batch."""
    now = datetime.now(UTC)
    bids = (
        [
            BookLevel(price=Decimal(bid) - Decimal("0.01") * i, quantity=(bid_size or 0) + i)
            for i in range(levels)
        ]
        if bid
        else []
    )
    asks = (
        [
            BookLevel(price=Decimal(ask) + Decimal("0.01") * i, quantity=(ask_size or 0) + i)
            for i in range(levels)
        ]
        if ask
        else []
    )
    return MarketDataUpdate(
        symbol=symbol,
        bid=Decimal(bid) if bid else None,
        bid_size=bid_size if bid else None,
        ask=Decimal(ask) if ask else None,
        ask_size=ask_size if ask else None,
        last=Decimal(last) if last else None,
        last_size=last_size,
        bids=bids,
        asks=asks,
        trades=[PublicTrade(price=Decimal(p), quantity=q, ts=now) for p, q in trades or []],
        ts=now,
    )


async def publish_report(redis: Redis, report: ExecutionReport) -> bytes:
    """XADD a report to `executions` as the engine does; the entry id."""
    return await redis.xadd(EXECUTIONS_STREAM, encode(report))  # type: ignore[arg-type]


async def publish_marketdata(redis: Redis, update: MarketDataUpdate) -> bytes:
    """XADD an update to `marketdata` as the engine does; the entry id."""
    return await redis.xadd(MARKETDATA_STREAM, encode(update))  # type: ignore[arg-type]


def small_receive_buffer_socket(port: int, size: int = 4096) -> socket.socket:
    """A TCP socket connected to the api with a tiny receive buffer, so a client that
    stops reading backs the server up after a few kilobytes instead of megabytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)  # before connect: sets the window
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
