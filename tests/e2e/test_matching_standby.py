"""Two matching processes: the second is a hot standby that takes every shard once the
first is SIGKILLed, and the books it serves are the ones PostgreSQL has."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.engine_helpers import order, submit, wait_order
from tests.support.engine import MatchingProcess, matching_settings
from tests.support.orders_sql import create_trader, place_order
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("instruments")]

# How long the first orders may wait for the new owner: a liveness bound, generous
# for a loaded host (the standby polls the locks every second, as shipped).
TAKEOVER_TIMEOUT_SECONDS = 10.0
SHARDS = [0, 1, 2, 3]


async def shard_lock_holders(engine: AsyncEngine, base: int) -> dict[int, int]:
    """Shard -> the PostgreSQL backend (pid) holding its advisory lock in this database."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT objid::bigint - :base, pid FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND classid = 0 AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database"
                "  WHERE datname = current_database())"
                " AND objid::bigint BETWEEN :base AND :base + :last"
            ),
            {"base": base, "last": len(SHARDS) - 1},
        )
        return {int(shard): int(pid) for shard, pid in rows.all()}


async def test_standby_takes_over_every_shard_after_a_sigkill(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> None:
    # Production polling (1 s), not the tests' fast one: the takeover works as shipped.
    settings = matching_settings(servers, database_url, shard_poll_seconds=1.0, block_ms=1000)
    active = MatchingProcess(settings, "active").start()
    standby = MatchingProcess(settings, "standby")
    try:
        await active.wait_serving(4)
        standby.start()
        await eventually(standby.health, lambda body: body is not None, timeout=20)
        body = await standby.health()
        assert body is not None
        assert body["shards"]["owned"] == []
        assert body["status"] == "ok"

        async with engine.begin() as conn:
            seller = await create_trader(conn, shares={"AAPL": 100, "MSFT": 100})
            buyer = await create_trader(conn, cash=100_000)
        asks = [
            await submit(
                engine,
                redis,
                lambda c, s=symbol, p=price: place_order(
                    c, seller.account_id, s, "sell", 10, limit_price=p
                ),
            )
            for symbol, price in (("AAPL", "190.00"), ("MSFT", "420.00"))
        ]
        for ask in asks:
            await wait_order(engine, ask.order_id, "new")

        before = await shard_lock_holders(engine, settings.shard_lock_base)
        assert sorted(before) == SHARDS  # the active's sessions hold every lock
        active.kill()
        # Orders sent right after the crash wait in the streams for the new owner.
        buys = [
            await submit(
                engine,
                redis,
                lambda c, s=symbol, p=price: place_order(
                    c, buyer.account_id, s, "buy", 10, limit_price=p
                ),
            )
            for symbol, price in (("AAPL", "190.00"), ("MSFT", "420.00"))
        ]
        for buy in buys:
            await wait_order(engine, buy.order_id, "filled", timeout=TAKEOVER_TIMEOUT_SECONDS)
        # The standby now holds every shard's lock (it did not before the kill) and
        # serves them; the resting asks it rebuilt from PostgreSQL were the ones hit.
        await standby.wait_serving(4, timeout=5)
        taken = await standby.health()
        assert taken is not None
        assert sorted(taken["shards"]["owned"]) == SHARDS
        after = await shard_lock_holders(engine, settings.shard_lock_base)
        assert sorted(after) == SHARDS
        assert set(after.values()).isdisjoint(before.values())  # other sessions hold them
        for ask in asks:
            assert (await order(engine, ask.order_id)).status == "filled"
    finally:
        active.kill()
        standby.kill()
