"""What must hold after a chaos run of the matching service, checked against PostgreSQL
and the Redis read models."""

from __future__ import annotations

import json
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.invariants import find_violations
from brokerx_core.streams import BOOK_KEY, order_stream
from tests.support.polling import eventually


async def wait_streams_drained(redis: Redis, shards: int = 4, timeout: float = 30.0) -> None:
    """Every entry of every `orders.<shard>` delivered and acknowledged."""

    async def outstanding() -> int:
        total = 0
        for shard in range(shards):
            for group in await redis.xinfo_groups(order_stream(shard)):
                total += int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return total

    await eventually(outstanding, lambda n: n == 0, timeout=timeout, message="streams not drained")


async def assert_consistent(engine: AsyncEngine, redis: Redis) -> dict[str, int]:
    """Invariants hold, nothing is pending_new, no trade applied twice, and the book the
    engine published (md:book) of every listed instrument is exactly its open orders in
    PostgreSQL: empty bids and asks for an instrument with none."""
    assert await find_violations(engine, pending_grace_seconds=0) == []
    async with engine.connect() as conn:
        counts = {
            status: int(n)
            for status, n in (
                await conn.execute(text("SELECT status, count(*) FROM client_order GROUP BY 1"))
            ).all()
        }
        twice = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT 1 FROM trade GROUP BY buy_order_id,"
                    " sell_order_id HAVING count(*) > 1) d"
                )
            )
        ).scalar_one()
        trades = (await conn.execute(text("SELECT count(*) FROM trade"))).scalar_one()
        levels = (
            await conn.execute(
                text(
                    "SELECT symbol, side, limit_price, sum(quantity - filled_quantity)"
                    " FROM client_order WHERE status IN ('new', 'partially_filled')"
                    " GROUP BY 1, 2, 3"
                )
            )
        ).all()
        symbols = (await conn.execute(text("SELECT symbol FROM instrument"))).scalars().all()
    assert "pending_new" not in counts
    assert twice == 0
    # Every listed instrument has its md:book (each shard rewrites all of its symbols'
    # read models when it recovers); one with no open order shows an empty book.
    expected: dict[str, dict[str, list[list[object]]]] = {
        symbol: {"bids": [], "asks": []} for symbol in symbols
    }
    for symbol, side, price, quantity in levels:
        expected[symbol]["bids" if side == "buy" else "asks"].append(
            [Decimal(price), int(quantity)]
        )
    assert expected, "no instrument listed"
    for symbol, book in expected.items():
        raw = await redis.get(BOOK_KEY.format(symbol=symbol))
        assert raw is not None, f"no md:book for {symbol}"
        published = json.loads(raw)
        bids = sorted(book["bids"], key=lambda level: level[0], reverse=True)[:10]  # type: ignore[arg-type, return-value]
        asks = sorted(book["asks"], key=lambda level: level[0])[:10]  # type: ignore[arg-type, return-value]
        assert [[Decimal(p), q] for p, q in published["bids"]] == bids, symbol
        assert [[Decimal(p), q] for p, q in published["asks"]] == asks, symbol
    return {**counts, "trades": int(trades)}
