"""A lean WebSocket client (RFC 6455) for the report streams of the load generator.

The `websockets` library costs tens of microseconds of Python per received message; with
200 clients each reading its execution reports, that made the generator's CPU (on the
same 2-vCPU machine) compete with the api under test. This client is an asyncio Protocol
that parses frames itself: every frame of a `data_received` chunk is parsed in one pass
and complete messages are queued as bytes (`orjson.loads` takes bytes), with one waiter
future for the reader; no task, no per-message decoding. It speaks only what the
benchmark needs: `ws://`, no extensions, no subprotocols, client-side text messages.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OK_CLOSE_CODES = frozenset({1000, 1001, 1005})  # as websockets' ConnectionClosedOK
_MAX_HEAD = 16_384


class WebSocketError(OSError):
    """Base of this client's errors (an OSError, as the caller's connection problems)."""


class HandshakeError(WebSocketError):
    """The server did not accept the WebSocket upgrade (no valid 101 answer)."""


class WebSocketClosed(WebSocketError):
    """The connection ended without a normal close (lost, protocol error, close code)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with code {code}" + (f": {reason}" if reason else ""))
        self.code = code


def _frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
    mask = os.urandom(4)
    if not n:
        return head + mask
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return head + mask + (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class _Protocol(asyncio.Protocol):
    def __init__(self, key: bytes, handshake: asyncio.Future[None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.messages: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.done = False  # no more messages will come
        self.error: WebSocketError | None = None  # why, when not a normal close
        self.close_sent = False
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._handshake: asyncio.Future[None] | None = handshake
        self._head = b""
        self._pending: list[bytes] = []  # unparsed bytes (an incomplete frame)
        self._have = 0  # their length
        self._need = 0  # bytes needed before parsing again
        self._fragments: list[bytes] | None = None  # a fragmented message being reassembled

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._fail_handshake("answer head too long")
                return
            data = self._head[end + 4 :]
            if not self._check_head(self._head[:end]):
                return
        if self.done:
            return
        if self._pending:
            self._pending.append(data)
            self._have += len(data)
            if self._have < self._need:
                return
            data = b"".join(self._pending)
            self._pending = []
        self._parse(data)

    def _check_head(self, head: bytes) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            self._fail_handshake(f"answer {lines[0]!r}")
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if (
            headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower()
            or headers.get("sec-websocket-accept", "").encode() != self._accept
        ):
            self._fail_handshake(f"bad upgrade headers {headers!r}")
            return False
        handshake, self._handshake, self._head = self._handshake, None, b""
        if handshake is not None and not handshake.done():
            handshake.set_result(None)
        return True

    def _parse(self, data: bytes) -> None:
        pos, size, messages, got = 0, len(data), self.messages, False
        while True:
            if size - pos < 2:
                need = 2
                break
            b0, b1 = data[pos], data[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    need = 4
                    break
                length, start = (data[pos + 2] << 8) | data[pos + 3], pos + 4
            elif length == 127:
                if size - pos < 10:
                    need = 10
                    break
                length, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            if b1 & 0x80 or b0 & 0x70:
                self._protocol_error("masked server frame or reserved bits set")
                return
            end = start + length
            if end > size:
                need = end - pos
                break
            payload, pos, opcode = data[start:end], end, b0 & 0x0F
            if opcode == 1 or opcode == 2:
                if self._fragments is not None:
                    self._protocol_error("new message inside a fragmented one")
                    return
                if b0 & 0x80:
                    messages.append(payload)
                    got = True
                else:
                    self._fragments = [payload]
            elif opcode == 0:
                if self._fragments is None:
                    self._protocol_error("continuation without a message")
                    return
                self._fragments.append(payload)
                if b0 & 0x80:
                    messages.append(b"".join(self._fragments))
                    self._fragments, got = None, True
            elif opcode == 9:
                self.write(0xA, payload)
            elif opcode == 8:  # answer it (unless we began the close), then stop reading
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.write(8, payload[:2])
                reason = payload[2:].decode("utf-8", "replace")
                self.finish(None if code in _OK_CLOSE_CODES else WebSocketClosed(code, reason))
                return
            elif opcode != 0xA:
                self._protocol_error(f"unknown opcode {opcode}")
                return
        if pos < size:
            self._pending = [data[pos:]]
            self._have, self._need = size - pos, need
        if got:
            self._wake()

    def write(self, opcode: int, payload: bytes) -> bool:
        """Send one frame; False (nothing sent) before the 101 or once closing."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.close_sent:
            return False
        if self._handshake is not None:
            return False
        self.close_sent = opcode == 8
        transport.write(_frame(opcode, payload))
        return True

    def _protocol_error(self, detail: str) -> None:
        self.write(8, struct.pack("!H", 1002))
        self.finish(WebSocketClosed(1002, detail))
        self.close()

    def _fail_handshake(self, detail: str) -> None:
        error = HandshakeError(detail)
        handshake, self._handshake = self._handshake, None
        if handshake is not None and not handshake.done():
            handshake.set_exception(error)
        self.finish(error)
        self.close()

    def finish(self, error: WebSocketError | None) -> None:
        if not self.done:
            self.done, self.error = True, error
            self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake is not None:
            self._fail_handshake(f"connection lost during the handshake {exc or ''}")
        self.finish(WebSocketClosed(1006, f"connection lost {exc or ''}".strip()))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class WebSocket:
    """An open connection: `send_text`, and `async for` over the received messages."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    async def send_text(self, text: str | bytes) -> None:
        """Send one text message (`text` as str or UTF-8 bytes)."""
        if not self._protocol.write(1, text.encode() if isinstance(text, str) else text):
            raise self._protocol.error or WebSocketClosed(1006, "connection closed")

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> bytes:
        """The next message's payload; stop on a normal close, raise on an abnormal end."""
        protocol = self._protocol
        while not protocol.messages:
            if protocol.done:
                if protocol.error is not None:
                    raise protocol.error
                raise StopAsyncIteration
            protocol.waiter = asyncio.get_running_loop().create_future()
            await protocol.waiter
        return protocol.messages.popleft()

    def close(self) -> None:
        """Send a normal close (unless one was already) and close the connection."""
        self._protocol.write(8, struct.pack("!H", 1000))
        self._protocol.finish(None)
        self._protocol.close()


@asynccontextmanager
async def connect(url: str, *, open_timeout: float = 10.0) -> AsyncIterator[WebSocket]:
    """`async with connect("ws://host:port/path") as ws:`, handshake done, closed on exit.

    Raises OSError (refused...), TimeoutError (no 101 within `open_timeout`) or
    HandshakeError.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme != "ws" or host is None:
        raise ValueError(f"only ws:// URLs are supported, not {url!r}")
    loop = asyncio.get_running_loop()
    key = base64.b64encode(os.urandom(16))
    handshake: asyncio.Future[None] = loop.create_future()
    protocol = _Protocol(key, handshake)
    request = (
        f"GET {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    ws = WebSocket(protocol)
    try:
        async with asyncio.timeout(open_timeout):
            transport, _ = await loop.create_connection(lambda: protocol, host, parts.port or 80)
            transport.write(request)
            await handshake
        yield ws
    finally:
        ws.close()
