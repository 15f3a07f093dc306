"""What one client may hold of the live stream, and for how long.

- Token expiry: a connection lives no longer than the access token it authenticated
  with. One timer per connection on the event loop (`loop.call_later`), armed once at
  auth and cancelled on close: a heap entry, nothing runs until it fires. A per-connection
  polling task would cost a task and a wake-up each; a sweep over every connection would
  either be late by its interval or cost O(connections) at a short one. The session sweep
  of monitor.py still compares each connection's expiry with the app clock as a backstop
  (a wall clock stepped forward, or a clock replaced in tests).
- Subscription actions: each subscribe reads up to two snapshots per symbol, so a
  connection takes subscribe/unsubscribe actions from a token bucket.
- Connections per client: counted by the hub (see `Hub.connections_of`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from brokerx_api.stream.connection import Connection
from brokerx_api.stream.monitor import CLOSE_UNAUTHORIZED

Clock = Callable[[], float]

CLOSE_TOO_MANY_CONNECTIONS = 4429


class ActionBucket:
    """A token bucket: `burst` actions at once, then `per_second` on average."""

    def __init__(self, burst: int, per_second: float, clock: Clock = time.monotonic) -> None:
        self._burst = float(max(1, burst))
        self._per_second = per_second
        self._clock = clock
        self._tokens = self._burst
        self._updated = clock()

    def take(self) -> bool:
        """Spend one action; False (nothing spent) when the bucket is empty."""
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._per_second)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class TokenExpiry:
    """Closes a connection (4401) when its access token expires by `clock` (epoch seconds,
    the app clock tokens are checked with)."""

    def __init__(self, conn: Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Arm the timer (from within the event loop)."""
        self._arm()

    def _arm(self) -> None:
        # Re-read the clock when the timer fires: the loop's monotonic clock and the wall
        # clock tokens are dated by may drift apart, so fire again for what remains.
        remaining = self._conn.token_expires_at - self._clock()
        if remaining <= 0:
            self._timer = None
            self._conn.close(CLOSE_UNAUTHORIZED)
            return
        self._timer = asyncio.get_running_loop().call_later(remaining, self._arm)

    def cancel(self) -> None:
        """Disarm the timer (the connection is closing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
