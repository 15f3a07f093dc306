"""The live stream's per-connection limits, without a socket: the subscription-action
bucket and the token-expiry timer (with injected clocks)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from brokerx_api.stream.connection import Connection
from brokerx_api.stream.hub import Hub
from brokerx_api.stream.limits import ActionBucket, TokenExpiry


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def connection(client_id: uuid.UUID | None = None, token_expires_at: float = 0.0) -> Connection:
    websocket: Any = object()
    return Connection(
        websocket,
        client_id=client_id or uuid.uuid4(),
        session_id=uuid.uuid4(),
        limit=10,
        token_expires_at=token_expires_at,
    )


def test_the_bucket_allows_a_burst_then_its_rate() -> None:
    clock = FakeClock()
    bucket = ActionBucket(burst=3, per_second=2.0, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # half an action
    assert bucket.take() is False
    clock.now += 0.25
    assert bucket.take() is True
    assert bucket.take() is False
    clock.now += 3600  # refills up to the burst, no further
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_a_refused_action_costs_nothing() -> None:
    clock = FakeClock()
    bucket = ActionBucket(burst=1, per_second=1.0, clock=clock)
    assert bucket.take() is True
    for _ in range(100):
        assert bucket.take() is False
    clock.now += 1.0
    assert bucket.take() is True


async def test_the_expiry_timer_closes_4401_only_once_the_clock_says_so() -> None:
    # The clock tokens are dated by stands still: the loop's timer fires when the token
    # would have expired, finds it has not, and waits again.
    clock = FakeClock(1000.0)
    conn = connection(token_expires_at=1000.05)
    TokenExpiry(conn, clock).start()
    await asyncio.sleep(0.2)  # several firings of the timer
    assert not conn.closing.is_set()
    clock.now = 1000.05
    await asyncio.wait_for(conn.closing.wait(), 10.0)
    assert conn.close_code == 4401


async def test_a_cancelled_expiry_timer_never_closes() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = connection(token_expires_at=1000.05)
    expiry = TokenExpiry(conn, lambda: 1000.0 + loop.time() - start)
    expiry.start()
    expiry.cancel()
    await asyncio.sleep(0.2)  # well past the expiry
    assert not conn.closing.is_set()


async def test_a_token_already_expired_closes_at_once() -> None:
    conn = connection(token_expires_at=999.0)
    TokenExpiry(conn, FakeClock(1000.0)).start()
    assert conn.close_code == 4401


def test_the_hub_counts_open_connections_per_client() -> None:
    hub = Hub()
    alice = uuid.uuid4()
    first, second, bobs = connection(alice), connection(alice), connection()
    for conn in (first, second, bobs):
        hub.add(conn)
    hub.add(first)  # idempotent
    assert hub.connections_of(alice) == 2
    assert hub.connections_of(bobs.client_id) == 1
    hub.remove(first)
    hub.remove(first)  # idempotent
    assert hub.connections_of(alice) == 1
    hub.remove(second)
    assert hub.connections_of(alice) == 0
