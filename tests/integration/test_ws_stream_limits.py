"""Limits of the live stream over a real socket: a connection ends when its access token
expires (4401), a client holds a bounded number of connections (4429), and subscribe /
unsubscribe actions are rate-limited (`rate_limited`, the connection stays open)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed

from brokerx_api.auth.clock import app_clock
from brokerx_api.auth.deps import token_service_from
from brokerx_api.settings import ApiSettings
from brokerx_api.stream.service import StreamOptions
from brokerx_core.auth.tokens import TokenService
from brokerx_core.observability.health import HEARTBEAT_KEY
from tests.conftest import settings_overrides
from tests.integration.test_ws_stream import closed_with
from tests.support.factories import create_client, create_session_token
from tests.support.live import LiveApi, open_stream, recv_json, recv_until, serve_api, subscribe
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")

# Generous: only a bound on how long a broken server may keep a test waiting.
LIVENESS_SECONDS = 10.0


@pytest.fixture
def limits() -> dict[str, Any]:
    """StreamOptions fields a test sets (parametrize `limits` to change them)."""
    return {}


@pytest.fixture
async def live(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    redis: Redis,
    instruments: None,
    limits: dict[str, Any],
) -> AsyncIterator[LiveApi]:
    await redis.set(HEARTBEAT_KEY.format(service="matching"), "1", ex=60)
    settings = ApiSettings(**settings_overrides(servers, database_url))
    options = StreamOptions(
        **{
            "auth_timeout_seconds": 2.0,
            "status_interval_seconds": 0.1,
            # No session sweep unless a test asks: token expiry must not depend on it.
            "session_check_interval_seconds": 3600.0,
            "close_timeout_seconds": 10.0,
            "read_block_ms": 300,
            **limits,
        }
    )
    async with serve_api(settings, options) as live_api:
        yield live_api


def short_lived_tokens(live: LiveApi, ttl_seconds: int) -> TokenService:
    """Make the app (and `create_session_token`) issue access tokens of `ttl_seconds`."""
    app = live.app
    settings = app.state.settings.model_copy(update={"access_token_ttl_seconds": ttl_seconds})
    tokens = token_service_from(settings, clock=lambda: app_clock(app)())
    app.state.token_service = tokens
    return tokens


async def refused_with(ws: Any) -> int | None:
    """The close code of a connection closed before it sent anything at all."""
    try:
        message = await asyncio.wait_for(ws.recv(), LIVENESS_SECONDS)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    pytest.fail(f"the server answered {message!r} before closing")


# -- token expiry -----------------------------------------------------------------------------


async def test_a_connection_is_closed_4401_when_its_access_token_expires(
    live: LiveApi, engine: AsyncEngine
) -> None:
    # 2 s: `exp` is whole seconds, so the token has between 1 and 2 s left once issued.
    tokens = short_lived_tokens(live, ttl_seconds=2)
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    claims = tokens.decode(token, "access")
    async with await open_stream(live, token) as ws:
        answer = await subscribe(ws, orders=True)
        assert answer["orders"] is True  # served normally while the token is valid
        # The session stays live (and is not re-checked here): only the token expires.
        assert await closed_with(ws, timeout=LIVENESS_SECONDS) == 4401
        assert time.time() >= claims.expires_at  # not before its time
    # A fresh token of the same session (as POST /auth/refresh hands out) connects again.
    assert claims.session_id is not None
    fresh = tokens.issue_access(client.client_id, claims.session_id)
    async with await open_stream(live, fresh) as ws:
        assert (await recv_json(ws))["type"] == "status"


@pytest.mark.parametrize("limits", [{"session_check_interval_seconds": 0.2}])
async def test_the_session_sweep_closes_a_connection_whose_token_expired_by_the_app_clock(
    live: LiveApi, engine: AsyncEngine
) -> None:
    """The sweep is the backstop for a wall clock that jumps ahead of the timer (here the
    app clock, replaced as tests do to move time)."""
    now = [time.time()]
    live.app.state.clock = lambda: now[0]
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    async with await open_stream(live, token) as ws:
        await recv_json(ws)  # status
        await ws.send(json.dumps({"action": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}
        now[0] += live.app.state.settings.access_token_ttl_seconds + 1
        assert await closed_with(ws, timeout=LIVENESS_SECONDS) == 4401


# -- connections per client -------------------------------------------------------------------


@pytest.mark.parametrize("limits", [{"max_connections_per_client": 2}])
async def test_a_client_over_its_connection_cap_is_closed_4429_right_after_auth(
    live: LiveApi, engine: AsyncEngine
) -> None:
    alice = await create_client(engine)
    web = await create_session_token(live.app, alice.client_id)
    mobile = await create_session_token(live.app, alice.client_id)  # another session
    bob = await create_client(engine)
    bobs = await create_session_token(live.app, bob.client_id)
    async with await open_stream(live, web) as first, await open_stream(live, mobile) as second:
        async with await open_stream(live) as third:
            await third.send(json.dumps({"action": "auth", "token": web}))
            assert await refused_with(third) == 4429
        # The others are untouched, and another client is not counted against Alice.
        for ws in (first, second):
            await ws.send(json.dumps({"action": "ping"}))
            await recv_until(ws, lambda m: m["type"] == "pong")
        async with await open_stream(live, bobs) as bob_ws:
            assert (await recv_json(bob_ws))["type"] == "status"

        # A connection that ends frees its place.
        await second.close()
        hub = live.app.state.stream.hub

        async def alices() -> int:
            return int(hub.connections_of(alice.client_id))

        await eventually(alices, lambda n: n == 1, timeout=LIVENESS_SECONDS)
        async with await open_stream(live, mobile) as again:
            assert (await recv_json(again))["type"] == "status"


# -- subscription actions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "limits", [{"subscription_burst": 3, "subscription_rate_per_second": 0.001}]
)
async def test_subscribe_and_unsubscribe_beyond_the_rate_are_refused_and_the_connection_stays(
    live: LiveApi, engine: AsyncEngine
) -> None:
    client = await create_client(engine)
    token = await create_session_token(live.app, client.client_id)
    async with await open_stream(live, token) as ws:
        await recv_json(ws)  # status
        for _ in range(2):
            assert (await subscribe(ws, orders=True))["type"] == "subscribed"
        await ws.send(json.dumps({"action": "unsubscribe", "orders": True}))
        assert (await recv_json(ws))["type"] == "unsubscribed"

        # The bucket (3 at once, refilled every 1000 s) is empty now.
        for action in ("subscribe", "unsubscribe"):
            await ws.send(json.dumps({"action": action, "quotes": ["AAPL"], "orders": True}))
            error = await recv_json(ws)
            assert error["type"] == "error"
            assert error["code"] == "rate_limited"
            assert error["detail"]
        # Refused whole: no snapshot was queued, and the connection still answers.
        await ws.send(json.dumps({"action": "ping"}))
        assert await recv_json(ws) == {"type": "pong"}
        assert live.app.state.stream.hub.has_symbol_subscribers("AAPL") is False
