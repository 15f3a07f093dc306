"""The fan-out hub: open connections indexed by symbol subscription and by client id.

Readers hand it decoded stream entries; it serializes each server message once and
queues the text on every interested connection. Nothing here awaits: dispatch cost is
the number of recipients, never the speed of any of them.
"""

from __future__ import annotations

import uuid
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from brokerx_api.stream import protocol
from brokerx_api.stream.connection import Channel, Connection
from brokerx_core.messages import MarketDataUpdate

# Report ids remembered to drop a report the engine published twice (redelivery).
SEEN_REPORTS = 10_000
CHANNELS: tuple[Channel, ...] = ("quotes", "books", "trades")


class Hub:
    """Connections of one api process and the indexes readers dispatch through."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._by_symbol: dict[Channel, defaultdict[str, set[Connection]]] = {
            channel: defaultdict(set) for channel in CHANNELS
        }
        self._by_client: defaultdict[uuid.UUID, set[Connection]] = defaultdict(set)
        self._open_by_client: Counter[uuid.UUID] = Counter()
        self._seen_reports: OrderedDict[str, None] = OrderedDict()
        self.status_level: Literal["ok", "degraded"] = "degraded"
        self.status_reason: str | None = "starting"

    # -- membership ------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        if conn not in self.connections:
            self.connections.add(conn)
            self._open_by_client[conn.client_id] += 1

    def remove(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self._open_by_client[conn.client_id] -= 1
            if self._open_by_client[conn.client_id] <= 0:
                del self._open_by_client[conn.client_id]
        for channel in CHANNELS:
            self._unindex(channel, conn, set(conn.subscriptions[channel]))
        self._set_orders(conn, False)

    def connections_of(self, client_id: uuid.UUID) -> int:
        """How many connections of this client are open here."""
        return self._open_by_client.get(client_id, 0)

    def subscribe(self, conn: Connection, symbols: dict[Channel, set[str]], orders: bool) -> None:
        """Add subscriptions (idempotent)."""
        for channel, wanted in symbols.items():
            for symbol in wanted:
                conn.subscriptions[channel].add(symbol)
                self._by_symbol[channel][symbol].add(conn)
        if orders:
            self._set_orders(conn, True)

    def unsubscribe(self, conn: Connection, symbols: dict[Channel, set[str]], orders: bool) -> None:
        """Remove subscriptions and anything still queued for them (idempotent)."""
        for channel, unwanted in symbols.items():
            self._unindex(channel, conn, unwanted)
            for symbol in unwanted:
                conn.subscriptions[channel].discard(symbol)
                conn.forget(channel, symbol)
        if orders:
            self._set_orders(conn, False)

    def _unindex(self, channel: Channel, conn: Connection, symbols: Iterable[str]) -> None:
        index = self._by_symbol[channel]
        for symbol in symbols:
            members = index.get(symbol)
            if members is not None:
                members.discard(conn)
                if not members:
                    del index[symbol]

    def _set_orders(self, conn: Connection, on: bool) -> None:
        conn.orders = on
        members = self._by_client[conn.client_id]
        if on:
            members.add(conn)
        else:
            members.discard(conn)
            if not members:
                del self._by_client[conn.client_id]

    # -- dispatch --------------------------------------------------------------------------

    def has_order_subscribers(self, client_id: uuid.UUID) -> bool:
        """Whether a connection here wants this client's execution reports."""
        return client_id in self._by_client

    def has_symbol_subscribers(self, symbol: str) -> bool:
        """Whether a connection here subscribed to any channel of this symbol."""
        return any(symbol in self._by_symbol[channel] for channel in CHANNELS)

    def publish_marketdata(self, update: MarketDataUpdate) -> None:
        """Queue quote, book and trades of one update to their subscribers."""
        symbol = update.symbol
        quote_subscribers = self._by_symbol["quotes"].get(symbol)
        if quote_subscribers:
            text = protocol.dumps(protocol.quote_body(update))
            for conn in quote_subscribers:
                conn.push_state("quote", symbol, text)
        book_subscribers = self._by_symbol["books"].get(symbol)
        if book_subscribers:
            text = protocol.dumps(protocol.book_body(update))
            for conn in book_subscribers:
                conn.push_state("book", symbol, text)
        trade_subscribers = self._by_symbol["trades"].get(symbol)
        if trade_subscribers and update.trades:
            # The engine lists a batch's trades in execution order.
            texts = [protocol.dumps(body) for body in protocol.trade_bodies(update)]
            for conn in trade_subscribers:
                for text in texts:
                    conn.push_trade(symbol, text)

    def publish_execution(self, report: dict[str, Any], owner: uuid.UUID) -> None:
        """Queue a report (its stream JSON, parsed) to its owner's connections that
        subscribed to `orders`. Raises KeyError/ValueError if it is not a report."""
        report_id = report["report_id"]
        if report_id in self._seen_reports:
            return
        owners = self._by_client.get(owner)
        if not owners:
            return
        text = protocol.dumps(protocol.execution_body(report))
        self._seen_reports[report_id] = None
        if len(self._seen_reports) > SEEN_REPORTS:
            self._seen_reports.popitem(last=False)
        # A copy: a slow owner may be disconnected (and unindexed) while we iterate.
        for conn in list(owners):
            conn.push_control("execution_report", text)

    def set_status(self, level: Literal["ok", "degraded"], reason: str | None) -> None:
        """Record the platform status and tell every connection when the level changes."""
        changed = level != self.status_level
        self.status_level, self.status_reason = level, reason
        if changed:
            text = self.status_text()
            for conn in list(self.connections):
                conn.push_control("status", text)

    def status_text(self) -> str:
        return protocol.status_message(self.status_level, self.status_reason)
