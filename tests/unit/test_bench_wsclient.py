"""The load generator's lean WebSocket client against a real server (the `websockets`
library's): handshake, masked client frames, the three length encodings, fragments,
ping/pong, normal and abnormal ends, and a non-WebSocket answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import string
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvloop
from websockets.asyncio.server import ServerConnection, serve

from bench.e2e.wsclient import HandshakeError, WebSocketClosed, _Protocol, connect

Handler = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/api/v1/stream"


async def _receive_all(url: str, *sent: str) -> list[bytes]:
    async with asyncio.timeout(10), connect(url, open_timeout=5) as ws:
        for text in sent:
            await ws.send_text(text)
        return [message async for message in ws]


def _text(size: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits + "é€", k=size))


async def test_client_messages_reach_the_server_as_text_of_every_length() -> None:
    got: list[str | bytes] = []
    sent = ['{"action":"auth"}', _text(200, 1), _text(70_000, 2), ""]

    async def handler(ws: ServerConnection) -> None:
        for _ in sent:
            got.append(await ws.recv())
        await ws.send("ok")

    async with _server(handler) as url:
        received = await _receive_all(url, *sent)
    assert got == sent  # str: text frames, masked (the server refuses unmasked ones)
    assert received == [b"ok"]


async def test_server_messages_of_each_length_encoding_arrive_intact_and_in_order() -> None:
    texts = [_text(10, 3), _text(200, 4), _text(70_000, 5), _text(126, 6), _text(65_536, 7)]

    async def handler(ws: ServerConnection) -> None:
        for text in texts:
            await ws.send(text)
        await ws.send(b"\x00\x01\xff")  # binary

    async with _server(handler) as url:
        received = await _receive_all(url)
    assert received == [text.encode() for text in texts] + [b"\x00\x01\xff"]


async def test_many_messages_sent_back_to_back_all_arrive_in_order() -> None:
    texts = [
        f'{{"type":"execution_report","n":{n},"pad":"{"x" * (n % 300)}"}}' for n in range(5000)
    ]

    async def handler(ws: ServerConnection) -> None:
        for text in texts:
            await ws.send(text)

    async with _server(handler) as url:
        received = await _receive_all(url)
    assert received == [text.encode() for text in texts]


async def test_a_fragmented_message_is_reassembled() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("before")
        await ws.send(["frag-1 ", "frag-2 ", _text(300, 8), "end"])
        await ws.send([b"\x01", b"\x02"])
        await ws.send("after")

    async with _server(handler) as url:
        received = await _receive_all(url)
    assert received == [
        b"before",
        ("frag-1 frag-2 " + _text(300, 8) + "end").encode(),
        b"\x01\x02",
        b"after",
    ]


async def test_a_server_ping_gets_its_pong() -> None:
    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        await ws.send("ponged")

    async with _server(handler) as url:
        received = await _receive_all(url)
    assert received == [b"ponged"]


async def test_an_abnormal_close_code_raises_after_the_messages() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(4408, "slow consumer")

    received: list[bytes] = []

    async def collect(url: str) -> None:
        async with asyncio.timeout(10), connect(url) as ws:
            async for message in ws:
                received.append(message)

    async with _server(handler) as url:
        with pytest.raises(WebSocketClosed) as caught:
            await collect(url)
    assert received == [b"last"]
    assert caught.value.code == 4408
    assert isinstance(caught.value, OSError)  # counted by the listener's `except OSError`


async def test_a_lost_connection_raises() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        ws.transport.abort()
        await asyncio.sleep(0.1)

    async with _server(handler) as url:
        with pytest.raises(WebSocketClosed) as caught:
            await _receive_all(url)
    assert caught.value.code == 1006


async def test_the_client_closes_normally_on_exit() -> None:
    closed = asyncio.Event()
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()
        codes.append(ws.close_code)
        closed.set()

    async with _server(handler) as url:
        async with asyncio.timeout(10), connect(url) as ws:
            assert await anext(aiter(ws)) == b"hello"
        await asyncio.wait_for(closed.wait(), 5)
    assert codes == [1000]


async def test_a_non_websocket_answer_is_a_handshake_error() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(HandshakeError, match="404"):
            await _receive_all(f"ws://127.0.0.1:{port}/api/v1/stream")


async def test_a_silent_server_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(TimeoutError):
            async with connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2):
                pass


def test_it_runs_on_uvloop_as_the_generator_does() -> None:
    texts = [_text(10, 9), _text(200, 10), _text(70_000, 11)]

    async def handler(ws: ServerConnection) -> None:
        assert await ws.recv() == "subscribe"
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        await ws.send(texts[:2])
        for text in texts:
            await ws.send(text)

    async def main() -> list[bytes]:
        async with _server(handler) as url:
            return await _receive_all(url, "subscribe")

    assert uvloop.run(main()) == [(texts[0] + texts[1]).encode()] + [t.encode() for t in texts]


class _FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 1 << 20])
async def test_frames_split_anywhere_across_reads_are_parsed(chunk: int) -> None:
    """Whatever the read boundaries (inside a header, a length, a payload), the same
    messages come out: fed to the protocol directly, chunk by chunk."""
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    texts = [_text(size, size).encode() for size in (0, 10, 125, 126, 200, 65_535, 70_000)]
    stream = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + accept
        + b"\r\n\r\n"
        + b"".join(_server_frame(1, text) for text in texts)
        + _server_frame(1, b"fr", fin=False)
        + _server_frame(9, b"ping!")  # a control frame between fragments
        + _server_frame(0, b"ag", fin=False)
        + _server_frame(0, b"ment")
        + _server_frame(8, struct.pack("!H", 1000))
    )
    handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    protocol = _Protocol(key, handshake)
    transport = _FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for start in range(0, len(stream), chunk):
        protocol.data_received(stream[start : start + chunk])
    assert handshake.done()
    assert handshake.exception() is None
    assert list(protocol.messages) == [*texts, b"fragment"]
    assert protocol.done
    assert protocol.error is None
    pong, close = transport.written
    assert pong[:2] == bytes([0x8A, 0x80 | 5])  # final pong, masked, 5 bytes
    mask = pong[2:6]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(pong[6:])) == b"ping!"
    assert close[:2] == bytes([0x88, 0x80 | 2])  # final close, masked, its code
