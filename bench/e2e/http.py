"""A lean HTTP/1.1 keep-alive client: one connection, one request at a time.

httpx costs a few hundred microseconds of Python per request; at thousands of requests
per second on a 2-vCPU machine that would make the generator the bottleneck. This
client writes the request bytes itself and parses the answer with httptools (the parser
uvicorn uses), so a request costs tens of microseconds of generator CPU.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools
import orjson


class TransportError(Exception):
    """No HTTP answer: connection refused/reset/closed, or timeout (`kind` says which)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body) if self.body else None

    def code(self) -> str | None:
        """The problem+json `code` of an error answer (None when absent or not JSON)."""
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        return data.get("code") if isinstance(data, dict) else None


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.received_any = False
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError("protocol", str(exc)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(TransportError("closed" if self.received_any else "reset", str(exc or "")))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if not self.parser.should_keep_alive():
            self.close()

    def _fail(self, error: TransportError) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpConnection:
    """A persistent connection to 127.0.0.1:`port`, reopened when the server drops it."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._host_header = f"{host}:{port}".encode()

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, self.host, self.port), self.timeout
            )
        except TimeoutError as exc:
            raise TransportError("connect_timeout") from exc
        except OSError as exc:
            raise TransportError("refused", str(exc)) from exc
        return protocol

    def _encode(
        self, method: str, path: str, headers: dict[str, str] | None, body: bytes | None
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self._host_header]
        if headers:
            lines.extend(f"{name}: {value}".encode() for name, value in headers.items())
        if body is not None:
            lines.append(b"Content-Type: application/json")
            lines.append(b"Content-Length: " + str(len(body)).encode())
        elif method in ("POST", "PATCH", "PUT"):
            lines.append(b"Content-Length: 0")
        return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: object = None,
    ) -> Response:
        """Send one request and wait for its answer; raise TransportError without one.

        A kept-alive connection the server closed while idle is reopened and the request
        sent again once, but only when not a byte of answer came back (so it was never
        processed: a server closes an idle connection only between requests).
        """
        payload = self._encode(
            method, path, headers, orjson.dumps(json) if json is not None else None
        )
        for attempt in (0, 1):
            reused = self._protocol is not None and not self._protocol.closed
            if not reused:
                self._protocol = await self._connect()
            protocol = self._protocol
            assert protocol is not None
            assert protocol.transport is not None
            waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            protocol.waiter = waiter
            protocol.received_any = False
            protocol.transport.write(payload)
            try:
                return await asyncio.wait_for(waiter, self.timeout)
            except TimeoutError as exc:
                protocol.close()  # a late answer must not be read as the next one's
                raise TransportError("timeout") from exc
            except TransportError as exc:
                protocol.close()
                if attempt == 0 and reused and exc.kind == "reset":
                    continue
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
