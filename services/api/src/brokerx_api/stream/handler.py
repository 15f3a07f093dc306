"""One WebSocket session: authenticate, then serve subscribe/unsubscribe/ping until closed.

Close codes: 1000 normal, 1001 server going away, 4401 authentication missing, invalid,
not the first message, not within `auth_timeout_seconds`, the session ended, or the token
expired (the access token the connection authenticated with: clients reconnect with a
fresh one from POST /auth/refresh); 4408 slow consumer (its execution reports backed up
beyond the queue bound); 4429 too many connections (the client already holds
`max_connections_per_client` on this api process; closed right after auth);
1013 try again later (the session could not be checked: database or Redis unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, cast

from fastapi import Request
from starlette.websockets import WebSocket

from brokerx_api.auth.clock import app_clock
from brokerx_api.auth.deps import AuthenticatedClient, get_token_service, session_account
from brokerx_api.errors import DomainError
from brokerx_api.marketdata.service import instrument_cache, read_book, read_quote
from brokerx_api.stream import protocol
from brokerx_api.stream.connection import Channel, Connection
from brokerx_api.stream.limits import CLOSE_TOO_MANY_CONNECTIONS, ActionBucket, TokenExpiry
from brokerx_api.stream.metrics import WS_CONNECTIONS, WS_LIMITED
from brokerx_api.stream.monitor import CLOSE_UNAUTHORIZED
from brokerx_api.stream.service import StreamService
from brokerx_core.auth.tokens import InvalidToken
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

SNAPSHOT_DEPTH = 50
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011


async def serve(websocket: WebSocket, service: StreamService) -> None:
    """Run one client's session to its end."""
    await websocket.accept()
    WS_CONNECTIONS.inc()
    try:
        options = service.options
        try:
            authenticated = await _authenticate(websocket, options.auth_timeout_seconds)
        except Exception:  # PostgreSQL/Redis unreachable: not the client's fault
            log.exception("ws_auth_unavailable")
            await _close(websocket, CLOSE_TRY_AGAIN_LATER, options.close_timeout_seconds)
            return
        if authenticated is None:
            await _close(websocket, CLOSE_UNAUTHORIZED, options.close_timeout_seconds)
            return
        client, token_expires_at = authenticated
        # No await between this count and `hub.add`: concurrent auths cannot both pass.
        if service.hub.connections_of(client.client_id) >= options.max_connections_per_client:
            WS_LIMITED.labels(limit="connections").inc()
            log.warning("ws_connection_limit", client_id=str(client.client_id))
            await _close(websocket, CLOSE_TOO_MANY_CONNECTIONS, options.close_timeout_seconds)
            return
        conn = Connection(
            websocket,
            client_id=client.client_id,
            session_id=client.session_id,
            limit=options.queue_size,
            token_expires_at=token_expires_at,
        )
        service.hub.add(conn)
        app = websocket.app
        expiry = TokenExpiry(conn, lambda: app_clock(app)())  # the clock tokens are read by
        try:
            expiry.start()
            conn.push_control("authenticated", protocol.AUTHENTICATED)
            conn.push_control("status", service.hub.status_text())
            await _run(conn, service)
        finally:
            expiry.cancel()
            service.hub.remove(conn)
    finally:
        WS_CONNECTIONS.dec()


async def _authenticate(
    websocket: WebSocket, wait_seconds: float
) -> tuple[AuthenticatedClient, int] | None:
    """The client named by a valid first `auth` message and its token's `exp`, else None."""
    try:
        message = await asyncio.wait_for(websocket.receive(), wait_seconds)
    except TimeoutError:
        return None
    if message["type"] != "websocket.receive":
        return None
    try:
        action = protocol.parse_action(message.get("text"))
    except protocol.ProtocolError:
        return None
    if not isinstance(action, protocol.AuthAction):
        return None
    # The auth dependencies only read `.app` from their request: a WebSocket serves as well.
    request = cast(Request, websocket)
    try:
        claims = get_token_service(request).decode(action.token, "access")
    except InvalidToken:
        return None
    assert claims.session_id is not None
    account_id = await session_account(request, claims.subject, claims.session_id)
    if account_id is None:
        return None
    return AuthenticatedClient(claims.subject, claims.session_id, account_id), claims.expires_at


async def _run(conn: Connection, service: StreamService) -> None:
    writer = asyncio.create_task(conn.write_forever(), name="ws-writer")
    receiver = asyncio.create_task(_receive_forever(conn, service), name="ws-receiver")
    closing = asyncio.create_task(conn.closing.wait(), name="ws-closing")
    tasks = (writer, receiver, closing)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if closing in done:
        assert conn.close_code is not None
        await _close(conn.websocket, conn.close_code, service.options.close_timeout_seconds)
        return
    failure = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
    if receiver in done and failure is not None:
        # A bug while serving the client's action: tell it, rather than drop the socket.
        log.error("ws_session_failed", exc_info=failure)
        await _close(conn.websocket, CLOSE_INTERNAL_ERROR, service.options.close_timeout_seconds)
    elif failure is not None:
        # The socket failed under the writer (the client vanished): nothing left to close.
        log.info("ws_writer_stopped", error_type=type(failure).__name__)
    # Otherwise the client left.


async def _close(websocket: WebSocket, code: int, wait_seconds: float) -> None:
    """Send a close frame. A client that stopped reading may never take it: after `wait_seconds`
    we give up and uvicorn closes the transport when the handler returns."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code), wait_seconds)


async def _receive_forever(conn: Connection, service: StreamService) -> None:
    websocket = conn.websocket
    options = service.options
    bucket = ActionBucket(options.subscription_burst, options.subscription_rate_per_second)
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        try:
            action = protocol.parse_action(message.get("text"))
            if isinstance(action, protocol.AuthAction):
                raise protocol.ProtocolError("already_authenticated", "Already authenticated")
            if isinstance(action, protocol.PingAction):
                conn.push_control("pong", protocol.PONG)
            elif not bucket.take():
                WS_LIMITED.labels(limit="subscriptions").inc()
                raise protocol.ProtocolError(
                    "rate_limited",
                    f"At most {options.subscription_burst} subscribe/unsubscribe actions at"
                    f" once, then {options.subscription_rate_per_second:g} per second",
                )
            else:
                await _change_subscriptions(conn, service, action)
        except protocol.ProtocolError as exc:
            conn.push_control("error", protocol.error_message(exc.code, exc.detail))


async def _change_subscriptions(
    conn: Connection, service: StreamService, action: protocol.SubscriptionAction
) -> None:
    """Apply a subscribe/unsubscribe as a whole (an unknown symbol changes nothing)."""
    cache = instrument_cache(conn.websocket)
    unknown = sorted([s for s in action.symbols() if await cache.find(s) is None])
    if unknown:
        raise protocol.ProtocolError("unknown_symbol", f"Unknown symbol(s): {', '.join(unknown)}")
    symbols: dict[Channel, set[str]] = {
        "quotes": {s.strip().upper() for s in action.quotes},
        "books": {s.strip().upper() for s in action.books},
        "trades": {s.strip().upper() for s in action.trades},
    }
    hub = service.hub
    kind: Literal["subscribed", "unsubscribed"]
    if action.action == "subscribe":
        hub.subscribe(conn, symbols, action.orders)
        kind = "subscribed"
    else:
        hub.unsubscribe(conn, symbols, action.orders)
        kind = "unsubscribed"
    subs = conn.subscriptions
    conn.push_control(
        kind,
        protocol.subscription_message(
            kind, subs["quotes"], subs["books"], subs["trades"], conn.orders
        ),
    )
    if action.action == "subscribe":
        # API.md: a snapshot (quote + book) follows every market-data subscription, of
        # whichever channel: one of each per symbol, however many lists name it.
        await _send_snapshots(conn, symbols["quotes"] | symbols["books"] | symbols["trades"])


async def _send_snapshots(conn: Connection, subscribed: set[str]) -> None:
    """Queue the current quote and book of each newly subscribed symbol, from the engine's
    read models. Live data that arrives meanwhile wins over the (older) snapshot."""
    for symbol in subscribed:
        conn.expect_snapshot("quote", symbol)
        conn.expect_snapshot("book", symbol)
    cache = instrument_cache(conn.websocket)
    redis = conn.websocket.app.state.redis
    try:
        for symbol in sorted(subscribed):
            instrument = await cache.get(symbol)
            quote = await read_quote(redis, instrument)
            text = protocol.dumps({"type": "quote", **quote.model_dump(mode="json")})
            conn.push_snapshot("quote", symbol, text)
            book = await read_book(redis, instrument, SNAPSHOT_DEPTH)
            text = protocol.dumps({"type": "book", **book.model_dump(mode="json")})
            conn.push_snapshot("book", symbol, text)
    except DomainError as exc:  # Redis unavailable: live data resumes when it is back
        conn.push_control("error", protocol.error_message("snapshot_unavailable", exc.detail))
