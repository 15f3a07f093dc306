"""The api's writes: one send per connection per loop iteration (brokerx_api.coalescing).

The transport proxy is checked against a recording transport; then a real uvicorn
server on a real socket shows that an answer now leaves in one write where uvicorn's
own protocol makes two.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from brokerx_api.coalescing import FLUSH_AT, CoalescingHttpToolsProtocol, CoalescingTransport
from tests.support.live import free_port, uvicorn_serving


class RecordingTransport:
    """Stands in for uvloop's transport: records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1234)}.get(name, default)


def _proxy() -> tuple[CoalescingTransport, RecordingTransport]:
    real = RecordingTransport()
    return CoalescingTransport(real, asyncio.get_running_loop()), real  # type: ignore[arg-type]


async def test_writes_of_one_iteration_leave_together_in_order() -> None:
    proxy, real = _proxy()
    proxy.write(b"HTTP/1.1 201 Created\r\n\r\n")
    proxy.write(memoryview(b'{"id": 1}'))
    proxy.write(b"")
    assert real.writes == []  # nothing sent before the iteration ends
    assert proxy.get_write_buffer_size() == 7 + len(b"HTTP/1.1 201 Created\r\n\r\n") + 9
    await asyncio.sleep(0)
    assert real.writes == [b'HTTP/1.1 201 Created\r\n\r\n{"id": 1}']
    proxy.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_a_large_write_goes_at_once_after_what_is_pending() -> None:
    proxy, real = _proxy()
    big = b"x" * FLUSH_AT
    proxy.write(b"head")
    proxy.write(big)
    assert real.writes == [b"head", big]
    for _ in range(FLUSH_AT // 1024):  # small writes adding up to the threshold
        proxy.write(b"y" * 1024)
    assert real.writes[2:] == [b"y" * FLUSH_AT]
    await asyncio.sleep(0)
    assert len(real.writes) == 3


async def test_close_and_eof_send_what_is_pending_and_abort_drops_it() -> None:
    proxy, real = _proxy()
    proxy.write(b"last words")
    proxy.close()
    assert real.writes == [b"last words"]
    assert real.closed
    await asyncio.sleep(0)
    assert real.writes == [b"last words"]  # the scheduled flush finds nothing left

    proxy, real = _proxy()
    proxy.write(b"body")
    proxy.write_eof()
    assert real.writes == [b"body"]
    assert real.eof

    proxy, real = _proxy()
    proxy.write(b"never sent")
    proxy.abort()
    await asyncio.sleep(0)
    assert real.writes == []
    assert real.aborted


async def test_other_calls_reach_the_real_transport() -> None:
    proxy, real = _proxy()
    assert proxy.get_extra_info("peername") == ("127.0.0.1", 1234)
    assert proxy.is_closing() is False
    real.closed = True
    assert proxy.is_closing() is True


def _counting(protocol: type[HttpToolsProtocol]) -> tuple[type[HttpToolsProtocol], list[int]]:
    """`protocol` with its real transport's writes counted."""
    sends: list[int] = []

    class Counting:
        def __init__(self, transport: Any) -> None:
            self._transport = transport

        def write(self, data: bytes) -> None:
            sends.append(len(data))
            self._transport.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._transport, name)

    class Counted(protocol):  # type: ignore[valid-type, misc]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(Counting(transport))

    return Counted, sends


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b'{"status": "new"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _writes_per_answer(protocol: type[HttpToolsProtocol]) -> tuple[list[int], bytes]:
    counted, sends = _counting(protocol)
    port = free_port()
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=port, http=counted, lifespan="off", log_config=None
    )
    async with uvicorn_serving(config):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /orders HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        body = await reader.readexactly(17)
        writer.close()
        await writer.wait_closed()
    return sends, head + body


async def test_an_answer_leaves_in_one_send_where_uvicorn_makes_two() -> None:
    plain_sends, plain_answer = await _writes_per_answer(HttpToolsProtocol)
    sends, answer = await _writes_per_answer(CoalescingHttpToolsProtocol)
    assert len(plain_sends) == 2  # uvicorn's own: headers, then body
    assert len(sends) == 1
    assert sends[0] == sum(plain_sends)
    assert _undated(answer) == _undated(plain_answer)
    assert answer.startswith(b"HTTP/1.1 201")
    assert answer.endswith(b'\r\n\r\n{"status": "new"}')


def _undated(answer: bytes) -> list[bytes]:
    return [line for line in answer.split(b"\r\n") if not line.startswith(b"date:")]
