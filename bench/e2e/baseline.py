"""The generator against an empty handler: how many requests per second it can drive and
how much CPU one request costs it, so the real run can show it was not the bottleneck.

`python -m bench.e2e.baseline --port P` serves a canned `201` order body to every request
(uvloop + httptools, no framework) in its own process; `measure()` drives it with the
same traders, mix and HTTP client as the real run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid

import httptools
import orjson
import psutil

from brokerx_devstack.procs import accepts_connections, free_port

_BODY = orjson.dumps(
    {
        "id": str(uuid.UUID(int=1)),
        "client_order_id": None,
        "symbol": "AAPL",
        "side": "buy",
        "type": "market",
        "quantity": 1,
        "limit_price": None,
        "time_in_force": "ioc",
        "status": "pending_new",
        "filled_quantity": 0,
        "leaves_quantity": 1,
        "avg_fill_price": None,
        "reserved_amount": "0.00",
        "reserved_quantity": 0,
        "version": 1,
        "reject_reason": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }
)
_RESPONSE = (
    b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\n\r\n"
    + _BODY
)


class _Empty(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.transport.write(_RESPONSE)


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Empty, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


class EmptyServer:
    """The empty handler in a subprocess."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EmptyServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e.baseline", "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not accepts_connections(self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the empty handler did not start")
            time.sleep(0.05)
        return self

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_serve(args.port))
    except ImportError:
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
