"""One background reader per stream (`executions`, `marketdata`) feeding the hub.

Plain XREAD, no consumer group: the api is a live fan-out, so every api process reads
every entry and nothing is acknowledged. A reader starts at the stream's tail when the
app starts, and again after it lost Redis (restart, flush, network): what was published
while it could not read is not replayed — clients re-sync over REST when the status
message returns to `ok`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from brokerx_api.stream.hub import Hub
from brokerx_api.stream.metrics import STREAM_LAG
from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.messages import MarketDataUpdate
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import EXECUTIONS_STREAM, MARKETDATA_STREAM

log = get_logger(__name__)

BLOCK_MS = 2_000  # ≤ 5 s (the Redis client's socket timeout is 15 s)
BATCH = 500
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

Entry = tuple[bytes | str, dict[bytes, bytes]]


def entry_age_seconds(entry_id: bytes | str, now: float) -> float:
    """Seconds since Redis appended the entry (its id starts with the append time in ms)."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return max(0.0, now - int(raw.split("-", 1)[0]) / 1000)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


class StreamReader:
    """Reads one stream from its tail and hands each batch to `dispatch`."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        dispatch: Callable[[list[Entry]], None],
        *,
        block_ms: int = BLOCK_MS,
    ) -> None:
        self._redis = redis
        self.stream = stream
        self._dispatch = dispatch
        self._block_ms = block_ms
        # The last entry read (or the tail at start): ("0-0", None) before the first one.
        self._last: Entry | None = None
        self._task: asyncio.Task[None] | None = None
        self.healthy = False
        self.lag_seconds = 0.0

    async def _tail(self) -> Entry:
        """The newest entry (("0-0", {}) when the stream does not exist yet)."""
        newest = await self._redis.xrevrange(self.stream, count=1)
        return (newest[0][0], newest[0][1]) if newest else (b"0-0", {})

    async def start(self) -> None:
        """Pin the starting position now (so entries added after start are delivered), then
        read in the background. A Redis outage here is retried by the background task."""
        try:
            self._last = await asyncio.wait_for(self._tail(), 2.0)
            self.healthy = True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("stream_reader_start_failed", stream=self.stream, error=str(exc))
        self._task = asyncio.create_task(self._run(), name=f"stream-reader:{self.stream}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        delay = RETRY_MIN_SECONDS
        while True:
            raise_if_cancelled()
            try:
                if self._last is None:
                    self._last = await self._tail()
                response = await self._redis.xread(
                    {self.stream: self._last[0]}, count=BATCH, block=self._block_ms
                )
                entries: list[Entry] = response[0][1] if response else []
                if not entries:
                    await self._notice_recreation()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.healthy = False
                log.warning("stream_reader_error", stream=self.stream, error=str(exc))
                self._last = None  # resume from the tail once Redis answers again
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self.healthy = True
            delay = RETRY_MIN_SECONDS
            if not entries:
                self._set_lag(0.0)
                continue
            self._last = entries[-1]
            self._set_lag(entry_age_seconds(self._last[0], time.time()))
            try:
                self._dispatch(entries)
            except Exception:  # a bug in one dispatch must not stop the live stream
                log.exception("stream_dispatch_failed", stream=self.stream)

    async def _notice_recreation(self) -> None:
        """After a quiet block: if the stream was deleted (Redis flushed) or recreated, read
        the new one from its start.

        XREAD only returns ids above ours, and a stream recreated within the same
        millisecond as our last entry (or on a server whose clock is behind) starts at or
        below it: without this its entries would never be seen.
        """
        assert self._last is not None
        last_id, last_fields = self._last
        tail_id, tail_fields = await self._tail()
        if _id_key(last_id) == (0, 0):
            return
        missing = _id_key(tail_id) == (0, 0)
        behind = _id_key(tail_id) < _id_key(last_id)
        replaced = _id_key(tail_id) == _id_key(last_id) and tail_fields != last_fields
        if missing or behind or replaced:
            log.warning("stream_recreated", stream=self.stream, missing=missing)
            self._last = (b"0-0", {})

    def _set_lag(self, seconds: float) -> None:
        self.lag_seconds = seconds
        STREAM_LAG.labels(stream=self.stream).set(seconds)


def _body(stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The entry's JSON object (orjson: a fraction of pydantic's cost), or None if garbage."""
    raw = fields.get(b"data") or fields.get("data")  # type: ignore[call-overload]
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        log.warning("stream_bad_entry", stream=stream, id=_text(entry_id))
        return None
    return body


def execution_dispatcher(hub: Hub) -> Callable[[list[Entry]], None]:
    """Route each `executions` entry to its owner's connections.

    Every api process reads every report, but a client's connections live on one of
    them: the owner is looked up first, and only a report with a local owner is
    rendered (from orjson's parse, no pydantic model: `protocol.execution_body`).
    """

    def dispatch(entries: list[Entry]) -> None:
        for entry_id, fields in entries:
            body = _body(EXECUTIONS_STREAM, entry_id, fields)
            if body is None:
                continue
            try:
                owner = uuid.UUID(str(body.get("client_id")))
                if hub.has_order_subscribers(owner):
                    hub.publish_execution(body, owner)
            except (KeyError, ValueError, TypeError):
                log.warning("stream_bad_entry", stream=EXECUTIONS_STREAM, id=_text(entry_id))

    return dispatch


def marketdata_dispatcher(hub: Hub) -> Callable[[list[Entry]], None]:
    """Decode `marketdata` entries of symbols someone here subscribed to; per symbol,
    only the batch's latest quote/book is sent (every trade is kept)."""

    def dispatch(entries: list[Entry]) -> None:
        latest: dict[str, MarketDataUpdate] = {}
        trades: dict[str, list[Any]] = {}
        for entry_id, fields in entries:
            body = _body(MARKETDATA_STREAM, entry_id, fields)
            if body is None:
                continue
            symbol = body.get("symbol")
            if isinstance(symbol, str) and not hub.has_symbol_subscribers(symbol):
                continue
            try:
                update = MarketDataUpdate.model_validate(body)
            except ValidationError:
                log.warning("stream_bad_entry", stream=MARKETDATA_STREAM, id=_text(entry_id))
                continue
            latest.pop(update.symbol, None)  # re-insert: keep the order of last appearance
            latest[update.symbol] = update
            trades.setdefault(update.symbol, []).extend(update.trades)
        for symbol, update in latest.items():
            if len(trades[symbol]) != len(update.trades):
                update = update.model_copy(update={"trades": trades[symbol]})
            hub.publish_marketdata(update)

    return dispatch


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
