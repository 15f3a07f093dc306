"""The live stream: `GET /api/v1/stream` (WebSocket), as API.md's "Live stream" describes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, WebSocket

from brokerx_api.stream.handler import serve
from brokerx_api.stream.service import StreamOptions, StreamService


@asynccontextmanager
async def stream_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One hub and one reader per stream for the whole process (not one per connection).

    `include_router` nests this inside the app's lifespan, so Redis is already open.
    """
    options = getattr(app.state, "stream_options", None) or StreamOptions.from_settings(
        app.state.settings
    )
    service = StreamService(app, options)
    await service.start()
    app.state.stream = service
    try:
        yield
    finally:
        await service.stop()


router = APIRouter(lifespan=stream_lifespan)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    """Live quotes, books, trades and the client's own execution reports.

    The first message must be `{"action":"auth","token":"<access_token>"}` (else close
    4401); then `subscribe`/`unsubscribe` with `quotes`, `books`, `trades` symbol lists and
    `orders: true`, and `{"action":"ping"}` (answered `{"type":"pong"}`).

    The connection is closed 4401 when that access token expires (reconnect with a fresh
    one from `POST /auth/refresh`) and 4429 right after auth when the client already holds
    too many connections; subscribe/unsubscribe beyond their rate are answered with an
    error `rate_limited`.
    """
    await serve(websocket, websocket.app.state.stream)
