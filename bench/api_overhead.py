"""The api's own CPU per request on the hot routes, in-process, without the database.

What the end-to-end bench cannot isolate: how much of the api's ~1 ms per request is
the web framework (routing, dependencies, validation, rendering, middleware) rather
than intake's SQL. The app is the real one (`create_app`, its lifespan against the local
PostgreSQL and Redis), but its intake batcher is replaced by one that answers at once,
and the session check is warmed, so what is measured is the request path alone. The
ASGI app is called directly (no sockets, no HTTP parsing: uvicorn's share is
measured by the e2e bench). Reported: CPU µs per request (`time.process_time`) per
route, and with `--profile` the top functions (cProfile, cumulative).

    uv run --frozen python bench/api_overhead.py [--requests 20000] [--profile] [--json-out F]

`make bench` runs it (docs/bench/api_overhead.json).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from brokerx_api.app import create_app
from brokerx_api.auth.deps import session_cache, token_service_from
from brokerx_api.settings import ApiSettings
from brokerx_core.intake import OrderRecord
from brokerx_core.intake.amend import Amended
from brokerx_core.migrate import upgrade_async

PG = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
DB = "brokerx_api_overhead"
ORDER = json.dumps(
    {"symbol": "AAPL", "side": "buy", "type": "limit", "quantity": 10, "limit_price": "180.00"}
).encode()


@dataclass
class _Placement:
    order: OrderRecord
    replayed: bool = False


class InstantIntake:
    """Answers every placement and cancel at once with a fixed order (no SQL, no XADD)."""

    def __init__(self, account_id: uuid.UUID) -> None:
        now = datetime.now(UTC)
        self.order = OrderRecord(
            id=uuid.uuid4(),
            account_id=account_id,
            client_order_id="c-1",
            symbol="AAPL",
            side="buy",
            type="limit",
            quantity=10,
            limit_price=Decimal("180.00"),
            time_in_force="day",
            status="pending_new",
            filled_quantity=0,
            avg_fill_price=None,
            reserved_amount=Decimal("1800.0000"),
            reserved_quantity=0,
            version=1,
            reject_reason=None,
            request_hash=None,
            created_at=now,
            updated_at=now,
        )

    async def place(self, account_id: uuid.UUID, order: Any, **_: Any) -> _Placement:
        return _Placement(self.order)

    async def cancel(self, request: Any) -> Amended:
        return Amended(order=self.order, command=None)  # type: ignore[arg-type]

    async def stop(self) -> None:
        return None


async def _database() -> str:
    admin = await asyncpg.connect(PG)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB}"')
    finally:
        await admin.close()
    url = PG.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{DB}"
    await upgrade_async(url)
    return url


def _scope(method: str, path: str, token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def _measure(app: Any, scope: dict[str, Any], body: bytes, n: int, expect: int) -> float:
    """CPU µs per request over `n` sequential requests (after a warm-up)."""
    for _ in range(200):
        status = await _call(app, scope, body)
        if status != expect:
            raise SystemExit(f"{scope['method']} {scope['path']} answered {status}")
    started = time.process_time()
    for _ in range(n):
        await _call(app, scope, body)
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="cProfile POST /orders")
    parser.add_argument("--json-out", help="write {route: µs CPU per request} here")
    args = parser.parse_args()
    settings = ApiSettings(
        database_url=await _database(), redis_url=REDIS, log_level="WARNING", log_json=True
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.intake.stop()
        client_id, session_id, account_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        intake = InstantIntake(account_id)
        app.state.intake = intake
        cache = session_cache(app)
        cache.ttl = 3600.0  # the memo holds for the whole run: no Redis, no SQL
        cache.put(session_id, account_id)
        token = token_service_from(settings).issue_access(client_id, session_id)
        routes = [
            ("POST", "/api/v1/orders", ORDER, 201),
            ("DELETE", f"/api/v1/orders/{intake.order.id}", b"", 202),
            ("GET", "/api/v1/instruments", b"", 200),
        ]
        results = {}
        for method, path, body, expect in routes:
            us = await _measure(app, _scope(method, path, token), body, args.requests, expect)
            label = "/api/v1/orders/{order_id}" if method == "DELETE" else path
            results[f"{method} {label}"] = round(us, 1)
            print(f"{method:6} {path[:40]:40} {us:8.1f} µs CPU/request")
        if args.json_out:
            text = json.dumps({"requests": args.requests, "cpu_us_per_request": results})
            await asyncio.to_thread(Path(args.json_out).write_text, text + "\n")
        if args.profile:
            profiler = cProfile.Profile()
            scope = _scope("POST", "/api/v1/orders", token)
            profiler.enable()
            for _ in range(args.requests // 4):
                await _call(app, scope, ORDER)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
            print(out.getvalue())


if __name__ == "__main__":
    asyncio.run(main())
