"""A logout on one api process is honoured by every other api process at once, although
each memoises live sessions in memory (auth/session_cache.py).

The "other process" is the session check of a second api instance: its own memo (kept
60 s, so only the broadcast can make it forget), its own revocation listener, the same
Redis and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from brokerx_api.auth.deps import session_account, token_service_from
from brokerx_api.auth.session_cache import LocalSessionCache, RevocationListener
from tests.support.factories import create_logged_in_client
from tests.support.polling import eventually

API = "/api/v1"


@pytest.fixture
async def other_process(app_api: tuple[Any, httpx.AsyncClient], redis: Redis) -> AsyncIterator[Any]:
    api_app = app_api[0]
    settings = api_app.state.settings.model_copy(update={"session_local_cache_seconds": 60})
    state = SimpleNamespace(
        redis=redis,
        settings=settings,
        sessionmaker=api_app.state.sessionmaker,
        session_cache=LocalSessionCache(60),
    )
    listener = RevocationListener(redis, state.session_cache)
    listener.start()
    await listener.subscribed.wait()
    yield SimpleNamespace(app=SimpleNamespace(state=state))
    await listener.stop()


async def test_logout_elsewhere_is_honoured_despite_the_memo(
    app_api: tuple[Any, httpx.AsyncClient], other_process: Any
) -> None:
    api_app, api = app_api
    client = await create_logged_in_client(api_app)
    claims = token_service_from(api_app.state.settings).decode(client.token, "access")
    assert claims.session_id is not None

    async def other_accepts() -> bool:
        found = await session_account(other_process, claims.subject, claims.session_id)
        return found is not None

    assert (await api.get(f"{API}/account", headers=client.headers)).status_code == 200
    assert await other_accepts()  # memoised there as live

    assert (await api.post(f"{API}/auth/logout", headers=client.headers)).status_code == 204

    # Same process: refused on the very next request.
    assert (await api.get(f"{API}/account", headers=client.headers)).status_code == 401
    # The other process would answer "live" from memory for a minute without the broadcast.
    await eventually(
        other_accepts,
        lambda accepted: not accepted,
        timeout=5.0,
        message="the other api process still accepts a logged-out session",
    )


async def test_a_memo_without_broadcasts_would_be_stale(
    app_api: tuple[Any, httpx.AsyncClient], other_process: Any
) -> None:
    api_app = app_api[0]
    """The memo does answer from memory: the test above proves the broadcast, not a miss."""
    client = await create_logged_in_client(api_app)
    claims = token_service_from(api_app.state.settings).decode(client.token, "access")
    state = other_process.app.state
    assert await session_account(other_process, claims.subject, claims.session_id) is not None
    await state.redis.set(f"auth:session:{claims.session_id}", "revoked")  # no broadcast

    assert await session_account(other_process, claims.subject, claims.session_id) is not None
    assert (
        await session_account(other_process, claims.subject, claims.session_id, memo=False) is None
    )
