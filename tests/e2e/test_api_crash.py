"""The api as a real uvicorn master with two workers, SIGKILLed between an order's
commit and its XADD while clients place orders over HTTP: nothing accepted is lost.

There is no fault hook in intake; the window between the commit and the XADD is held
open from outside instead. `CLIENT PAUSE WRITE` on the (private) Redis makes every XADD
wait while PostgreSQL keeps committing, so a committed command (an outbox row) that is
on no stream during the pause is stuck in an api worker; both workers are then killed,
and Redis drops their connections before it resumes, so those commands are never
published by the api. Only the worker's outbox
relay can bring them to the engine (the matching service is not restarted, so its
recovery never sees them): every such order, and every order that was answered 201,
must reach the engine, once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import settings_overrides
from tests.e2e.crash_stack import (
    HttpTrader,
    Service,
    api_service,
    create_http_traders,
    outbox_ids_on_streams,
    private_redis,
    redis_addresses,
    redis_client,
    wait_disconnected,
    worker_service,
    writes_paused,
)
from tests.e2e.matching_checks import assert_consistent, wait_streams_drained
from tests.support.engine import MatchingProcess, matching_settings, wait_settled
from tests.support.metrics import total
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.usefixtures("instruments")]
__all__ = ["private_redis"]  # the fixture, used by name

TRADERS = 12
CLIENTS = 12
BEFORE_CRASH = 150  # orders accepted before the blow
ACCEPTED = 500  # orders accepted in all
PRICES = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00")}


@dataclass
class HttpLoad:
    """Clients placing limit orders over HTTP, each order with its client_order_id.

    `accepted`: 201 answers (order ids). `unknown`: requests that got no answer or a
    5xx (the worker died under them): committed or not, nobody told the client.
    """

    url: str
    traders: list[HttpTrader]
    seed: int
    accepted: list[uuid.UUID] = field(default_factory=list)
    refused: int = 0
    unknown: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    sent: int = 0

    async def run(self, target: int) -> None:
        rng = random.Random(self.seed)
        async with httpx.AsyncClient(base_url=self.url, timeout=15, trust_env=False) as client:

            async def place() -> None:
                while len(self.accepted) < target:
                    if self.sent > target * 4:
                        raise AssertionError(f"too few orders accepted: {self!r}")
                    self.sent += 1
                    await self._one(client, rng)

            async with asyncio.TaskGroup() as group:
                for _ in range(CLIENTS):
                    group.create_task(place())

    async def _one(self, client: httpx.AsyncClient, rng: random.Random) -> None:
        trader = rng.choice(self.traders)
        symbol = rng.choice(list(PRICES))
        side = rng.choice(("buy", "sell"))
        # Within 1 % of the reference, about a third crossing the other side.
        offset = PRICES[symbol] * Decimal(rng.randint(-50, 100)) / 10_000
        price = PRICES[symbol] - offset if side == "buy" else PRICES[symbol] + offset
        client_order_id = f"crash-{uuid.uuid4().hex[:16]}"
        body = {
            "symbol": symbol,
            "side": side,
            "type": "limit",
            "quantity": rng.randint(1, 20),
            "limit_price": str(price.quantize(Decimal("0.01"))),
            "time_in_force": rng.choice(("day", "gtc", "ioc")),
            "client_order_id": client_order_id,
        }
        try:
            response = await client.post("/api/v1/orders", json=body, headers=trader.headers)
        except httpx.HTTPError:
            self.unknown.append((trader.account_id, client_order_id))
            await asyncio.sleep(0.05)  # pacing while the workers come back, not a wait
            return
        if response.status_code == 201:
            self.accepted.append(uuid.UUID(response.json()["id"]))
        elif response.status_code >= 500:
            self.unknown.append((trader.account_id, client_order_id))
        else:
            assert response.status_code in (409, 422), response.text
            self.refused += 1


async def strand_commands(engine: AsyncEngine, redis: Redis, api: Service) -> list[uuid.UUID]:
    """Pause Redis writes; wait for committed commands that are not on any stream (their
    XADD waits in an api worker); SIGKILL every api worker; resume only once Redis has
    dropped the dead workers' connections, and with them the XADDs they had sent.
    Returns the orders of those commands: committed, never published by the api."""
    async with writes_paused(redis):

        async def unpublished() -> list[uuid.UUID]:
            published = await outbox_ids_on_streams(redis)  # frozen while paused
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT id, payload FROM outbox"))).all()
            return [
                uuid.UUID(json.loads(payload)["order_id"])
                for outbox_id, payload in rows
                if outbox_id not in published
            ]

        stranded = await eventually(
            unpublished, timeout=20, interval=0.01, message="a command waiting for its XADD"
        )
        victims = api.workers()
        addresses = redis_addresses(victims, redis)
        for victim in victims:
            victim.kill()
        psutil.wait_procs(victims, timeout=10)

        await wait_disconnected(redis, addresses)
    return stranded


async def statuses(engine: AsyncEngine) -> dict[uuid.UUID, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, status FROM client_order"))
        return {order_id: status for order_id, status in rows.all()}


async def test_api_workers_killed_between_commit_and_xadd_lose_no_accepted_order(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    private_redis: str,
    smtp: SmtpSink,
    tmp_path: Path,
) -> None:
    from brokerx_api.settings import ApiSettings

    started = time.monotonic()
    token_settings = ApiSettings(**settings_overrides(servers, database_url))
    traders = await create_http_traders(
        engine, TRADERS, shares=dict.fromkeys(PRICES, 100_000), token_settings=token_settings
    )
    matching = MatchingProcess(
        matching_settings(servers, database_url, redis_url=private_redis), "api-crash"
    )
    worker = worker_service(database_url, private_redis, tmp_path, smtp.port)
    api = api_service(database_url, private_redis, tmp_path, workers=2)
    sender: asyncio.Task[None] | None = None
    try:
        matching.start()
        worker.start()
        api.start()
        await matching.wait_serving(4)
        await worker.wait_healthy()
        await api.wait_healthy()
        await eventually(lambda: _count(api.workers()), lambda n: n == 2, timeout=30)

        load = HttpLoad(api.url, traders, seed=5)
        sender = asyncio.create_task(load.run(ACCEPTED))
        await eventually(
            lambda: _count(load.accepted), lambda n: n >= BEFORE_CRASH, timeout=60, interval=0.05
        )
        async with redis_client(private_redis) as redis:
            stranded = await strand_commands(engine, redis, api)
            await sender  # the master replaces its workers; the clients carry on
            await wait_settled(engine, timeout=60)
            await wait_streams_drained(redis)
            counts = await assert_consistent(engine, redis)
        final = await statuses(engine)
        metrics = await worker.get("/metrics")
    finally:
        if sender is not None and not sender.done():
            sender.cancel()
        api.kill()
        worker.kill()
        matching.kill()

    assert stranded, "no order was caught between its commit and its XADD"
    assert all(final[order_id] != "pending_new" for order_id in stranded)
    missing = [order_id for order_id in load.accepted if order_id not in final]
    assert missing == []
    assert all(final[order_id] != "pending_new" for order_id in load.accepted)
    # Requests that died with their worker: each order is there and processed, or absent.
    async with engine.connect() as conn:
        for account_id, client_order_id in load.unknown:
            status = (
                await conn.execute(
                    text(
                        "SELECT status FROM client_order"
                        " WHERE account_id = :a AND client_order_id = :c"
                    ),
                    {"a": account_id, "c": client_order_id},
                )
            ).scalar_one_or_none()
            assert status != "pending_new"
    # Nothing else could have published them: the relay did.
    assert metrics is not None
    assert metrics.status_code == 200
    assert total(metrics.text, "brokerx_outbox_republished_total") >= len(stranded)
    assert counts["trades"] > 50
    print(
        f"\n{len(load.accepted)} accepted, {len(load.unknown)} unanswered, {load.refused}"
        f" refused; {len(stranded)} stranded by the kill and relayed; {counts}"
        f" in {time.monotonic() - started:.1f}s"
    )


async def _count(items: Sequence[object]) -> int:
    return len(items)
