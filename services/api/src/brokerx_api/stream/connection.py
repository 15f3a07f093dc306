"""One authenticated WebSocket client: its subscriptions and its bounded outgoing queue.

Producers (stream readers, the status monitor, the client's own actions) only ever call
the non-blocking `push_*` methods; a per-connection writer task is the only code that
awaits the socket. So a client that stops reading can delay nobody but itself.

The queue has two lanes, drained control-first:
- control: execution reports and protocol answers (authenticated, subscribed, error,
  status, pong). Never dropped: when it holds `limit` messages and another arrives,
  the client is too slow to be told what happened to its orders, so it is disconnected
  (close code 4408) rather than silently skipping a report.
- market data: at most one pending quote and one pending book per symbol (a newer one
  replaces the pending one in place — conflation), plus at most `limit` pending trades
  (the oldest is dropped first).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import OrderedDict, deque
from typing import Any, Literal

from starlette.websockets import WebSocket

from brokerx_api.stream.metrics import WS_MESSAGES_DROPPED, WS_MESSAGES_SENT
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

CLOSE_SLOW_CONSUMER = 4408

Channel = Literal["quotes", "books", "trades"]
# ("quote"|"book", symbol) for conflated state; ("trade", symbol, seq) for trades.
MarketKey = tuple[str, str] | tuple[str, str, int]


_SENT_BY_KIND: dict[str, Any] = {}


def _sent(kind: str) -> Any:
    """The `WS_MESSAGES_SENT` child of a message kind (`labels()` costs a lock and a
    lookup per call; it runs for every message written)."""
    child = _SENT_BY_KIND.get(kind)
    if child is None:
        child = _SENT_BY_KIND[kind] = WS_MESSAGES_SENT.labels(type=kind)
    return child


class Connection:
    """Subscriptions and outgoing queue of one authenticated client."""

    def __init__(
        self,
        websocket: WebSocket,
        *,
        client_id: uuid.UUID,
        session_id: uuid.UUID,
        limit: int,
        token_expires_at: float = math.inf,
    ) -> None:
        self.websocket = websocket
        self.client_id = client_id
        self.session_id = session_id
        # `exp` of the access token the client authenticated with (epoch seconds).
        self.token_expires_at = token_expires_at
        self.limit = max(1, limit)
        self.subscriptions: dict[Channel, set[str]] = {
            "quotes": set(),
            "books": set(),
            "trades": set(),
        }
        self.orders = False
        self.close_code: int | None = None
        self.closing = asyncio.Event()
        self._control: deque[tuple[str, str]] = deque()
        self._market: OrderedDict[MarketKey, tuple[str, str]] = OrderedDict()
        self._trades_pending = 0
        self._trade_seq = 0
        # Snapshot keys still wanted: live data that arrives first makes the snapshot stale.
        self._awaiting_snapshot: set[tuple[str, str]] = set()
        self._ready = asyncio.Event()

    # -- producers (never block) ----------------------------------------------------------

    def push_control(self, kind: str, text: str) -> None:
        """Queue a message that must not be lost; disconnect the client if it cannot keep up."""
        if self.closing.is_set():
            return
        if len(self._control) >= self.limit:
            self.disconnect_slow()
            return
        self._control.append((kind, text))
        self._ready.set()

    def push_state(self, kind: Literal["quote", "book"], symbol: str, text: str) -> None:
        """Queue the latest quote/book of a symbol, replacing a pending older one."""
        if self.closing.is_set():
            return
        key = (kind, symbol)
        self._awaiting_snapshot.discard(key)
        if key in self._market:
            WS_MESSAGES_DROPPED.labels(reason="conflated").inc()
        self._market[key] = (kind, text)
        self._ready.set()

    def push_trade(self, symbol: str, text: str) -> None:
        """Queue a public trade; when `limit` trades are pending, the oldest is dropped."""
        if self.closing.is_set():
            return
        if self._trades_pending >= self.limit:
            oldest = next(k for k in self._market if k[0] == "trade")
            del self._market[oldest]
            self._trades_pending -= 1
            WS_MESSAGES_DROPPED.labels(reason="overflow").inc()
        self._trade_seq += 1
        self._market[("trade", symbol, self._trade_seq)] = ("trade", text)
        self._trades_pending += 1
        self._ready.set()

    def expect_snapshot(self, kind: Literal["quote", "book"], symbol: str) -> None:
        """Note that a snapshot of (kind, symbol) is being fetched for this client."""
        self._awaiting_snapshot.add((kind, symbol))

    def push_snapshot(self, kind: Literal["quote", "book"], symbol: str, text: str) -> None:
        """Queue a snapshot unless live data for the same key arrived while it was fetched."""
        key = (kind, symbol)
        if key in self._awaiting_snapshot:
            self._awaiting_snapshot.discard(key)
            self.push_state(kind, symbol, text)

    def forget(self, channel: Channel, symbol: str) -> None:
        """Drop pending market data of an unsubscribed channel/symbol."""
        kind = {"quotes": "quote", "books": "book", "trades": "trade"}[channel]
        self._awaiting_snapshot.discard((kind, symbol))
        stale = [k for k in self._market if k[0] == kind and k[1] == symbol]
        for key in stale:
            del self._market[key]
        if kind == "trade":
            self._trades_pending -= len(stale)

    def disconnect_slow(self) -> None:
        """Give up on a client that does not read: discard its queue, close with 4408."""
        if self.closing.is_set():
            return
        discarded = len(self._control) + len(self._market) + 1  # + the message that did not fit
        WS_MESSAGES_DROPPED.labels(reason="disconnected").inc(discarded)
        log.warning(
            "ws_slow_consumer_disconnected", client_id=str(self.client_id), discarded=discarded
        )
        self._control.clear()
        self._market.clear()
        self._trades_pending = 0
        self.close(CLOSE_SLOW_CONSUMER)

    def close(self, code: int) -> None:
        """Ask the connection's handler to close the socket with `code`."""
        if self.close_code is None:
            self.close_code = code
        self.closing.set()

    @property
    def pending(self) -> int:
        return len(self._control) + len(self._market)

    # -- writer ----------------------------------------------------------------------------

    def _next(self) -> tuple[str, str] | None:
        if self._control:
            return self._control.popleft()
        if self._market:
            key, item = self._market.popitem(last=False)
            if key[0] == "trade":
                self._trades_pending -= 1
            return item
        return None

    async def write_forever(self) -> None:
        """Send queued messages in order until the socket fails or the task is cancelled."""
        while not self.closing.is_set():
            item = self._next()
            if item is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            kind, text = item
            await self.websocket.send_text(text)
            _sent(kind).inc()
