"""One send per connection per event-loop iteration, for uvicorn's HTTP protocol.

uvicorn writes an answer's status line and headers when the app sends
`http.response.start`, then the body on `http.response.body`; uvloop (like asyncio)
sends each `transport.write` at once when its buffer is empty. So every answer took two
`send` system calls, and the client two segments to read. Live-stream messages that
leave in the same iteration (an order's `new` and its fill) took one each. On the 2-vCPU
deployment a loopback send costs tens of microseconds of kernel time, of the same order
as the whole framework's work for a POST /orders (`bench/api_overhead.py`).

`CoalescingTransport` keeps the writes made during one iteration and hands them to the
real transport as one buffer from a callback scheduled with `call_soon`, i.e. before
the loop next waits for I/O: nothing is delayed past the current iteration. Writes of
`FLUSH_AT` bytes or more go out at once (after what is pending, in order), so large
answers are not copied and flow control keeps working. `close` and `write_eof` send
what is pending first; `abort` drops it, as the real transport drops its buffer.

`CoalescingHttpToolsProtocol` is uvicorn's httptools protocol on such a transport; a
WebSocket upgrade hands the same transport to the WebSocket protocol, so the live
stream's messages are coalesced too. It is passed to uvicorn as `http=` (see
`brokerx_api.__main__`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

FLUSH_AT = 64 * 1024


class CoalescingTransport:
    """A transport proxy whose small writes of one loop iteration leave together."""

    __slots__ = ("_loop", "_pending", "_pending_size", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if len(data) >= FLUSH_AT:
            self.flush()
            self._transport.write(data)
            return
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._scheduled_flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what is pending to the real transport now."""
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def _scheduled_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._pending_size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._pending_size + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # Everything else (is_closing, get_extra_info, pause_reading, set_protocol, …)
        # is the real transport's.
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real: Any = transport
        super().connection_made(CoalescingTransport(real, self.loop))  # type: ignore[arg-type]
