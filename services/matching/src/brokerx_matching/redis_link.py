"""A shard's own Redis connection for its two commands per batch.

Each batch makes two Redis calls: XREADGROUP (the batch) and one EVALSHA (its reports,
market data and XACK, see publish.py). Through redis-py each cost 50–70 µs of Python
(argument encoding one by one, the connection pool, health checks, timeouts) — more than
a PostgreSQL round trip through asyncpg, and a tenth of a small batch's whole cost. Here
one connection per shard carries them: a command is one `bytes` write, the reply is
parsed by hiredis (which redis-py uses too), and errors are redis-py's exceptions, so
callers handle an outage (`ConnectionError`, `TimeoutError`) or a vanished group
(`ResponseError` NOGROUP) as before. Everything else (recovery, housekeeping) stays on
the shared redis-py client.

Commands run one at a time per shard (the consumer is sequential), but replies are
matched to requests in order anyway, and a request abandoned by a cancelled caller still
consumes its reply.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = bytes | str | int | float


def pack(args: Sequence[Arg]) -> bytes:
    """A command in RESP: `*<n>` then `$<len>` and the bytes of each argument (a batch's
    publish script takes a few arguments per report: this loop is the hot one)."""
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if type(arg) is not bytes:
            arg = arg.encode() if isinstance(arg, str) else repr(arg).encode()
        append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except InvalidResponse as exc:
                self._fail(exc)
                return
            if reply is False:
                return
            if self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc!r}"))

    def _fail(self, exc: Exception) -> None:
        self.lost = exc
        if self.transport is not None:
            self.transport.close()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)


class RedisLink:
    """One connection (opened on first use, reopened after a failure)."""

    def __init__(self, url: str, *, timeout: float, connect_timeout: float = 3.0) -> None:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self._path: str | None = options.get("path")
        self._host: str = options.get("host", "127.0.0.1")
        self._port: int = int(options.get("port", 6379))
        self._db = int(options.get("db") or 0)
        self._username: str | None = options.get("username")
        self._password: str | None = options.get("password")
        self._ssl = ssl.create_default_context() if urlsplit(url).scheme == "rediss" else None
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (a `ResponseError` is raised)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        reply = await self._roundtrip(protocol, pack(args), self._timeout)
        if isinstance(reply, ResponseError):
            if str(reply).startswith("NOSCRIPT"):
                raise NoScriptError(str(reply))
            raise reply
        return reply

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    async def _roundtrip(self, protocol: _Protocol, data: bytes, seconds: float) -> Any:
        assert protocol.transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.waiting.append(future)
        protocol.transport.write(data)
        timer = loop.call_later(seconds, _expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    async def _connect(self) -> _Protocol:
        self.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._path is not None:
                    _, protocol = await loop.create_unix_connection(_Protocol, self._path)
                else:
                    _, protocol = await loop.create_connection(
                        _Protocol, self._host, self._port, ssl=self._ssl
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
        if self._password is not None:
            credentials = [self._password]
            if self._username is not None:
                credentials.insert(0, self._username)
            await self._handshake(protocol, "AUTH", *credentials)
        if self._db:
            await self._handshake(protocol, "SELECT", self._db)
        self._protocol = protocol
        return protocol

    async def _handshake(self, protocol: _Protocol, *args: Arg) -> None:
        reply = await self._roundtrip(protocol, pack(args), self._connect_timeout)
        if isinstance(reply, ResponseError):
            protocol._fail(RedisConnectionError(str(reply)))
            raise reply


def _expire(protocol: _Protocol, future: asyncio.Future[Any]) -> None:
    """No reply in time: the connection's state is unknown, drop it."""
    if not future.done():
        protocol._fail(RedisTimeoutError("Redis did not answer in time"))
