"""Shared fixtures' helpers for the engine integration tests: reading what a user sees."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.invariants import find_violations
from brokerx_core.messages import ExecutionReport, decode_execution
from brokerx_core.streams import EXECUTIONS_STREAM, QUOTE_KEY
from tests.support.orders_sql import Sent, Trader, publish
from tests.support.polling import eventually

TERMINAL = ("filled", "canceled", "expired", "rejected")


async def order(engine: AsyncEngine, order_id: uuid.UUID) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(text("SELECT * FROM client_order WHERE id = :id"), {"id": order_id})
        ).one()


async def wait_order(
    engine: AsyncEngine, order_id: uuid.UUID, *statuses: str, timeout: float = 10.0
) -> Any:
    """The order once its status is one of `statuses`."""
    return await eventually(
        lambda: order(engine, order_id),
        lambda row: row.status in statuses,
        timeout=timeout,
        message=f"order {order_id} never reached {statuses}",
    )


async def account(engine: AsyncEngine, trader: Trader) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT cash, reserved_cash FROM account WHERE id = :id"),
                {"id": trader.account_id},
            )
        ).one()


async def position(engine: AsyncEngine, trader: Trader, symbol: str) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT quantity, reserved_quantity, avg_cost FROM position"
                    " WHERE account_id = :a AND symbol = :s"
                ),
                {"a": trader.account_id, "s": symbol},
            )
        ).one_or_none()


async def trades(engine: AsyncEngine, symbol: str | None = None) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT * FROM trade WHERE CAST(:s AS text) IS NULL OR symbol = :s"
                        " ORDER BY seq"
                    ),
                    {"s": symbol},
                )
            ).all()
        )


async def ledger(engine: AsyncEngine, trader: Trader) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT kind, amount, balance_after, reference_id FROM ledger_entry"
                        " WHERE account_id = :a ORDER BY seq"
                    ),
                    {"a": trader.account_id},
                )
            ).all()
        )


async def reports(redis: Redis, order_id: uuid.UUID | None = None) -> list[ExecutionReport]:
    """Execution reports on the `executions` stream (of one order), in stream order."""
    entries = await redis.xrange(EXECUTIONS_STREAM)
    decoded = [decode_execution(fields) for _id, fields in entries]
    return [r for r in decoded if order_id is None or r.order_id == order_id]


async def events(redis: Redis, order_id: uuid.UUID) -> list[str]:
    return [r.event for r in await reports(redis, order_id)]


async def quote(redis: Redis, symbol: str) -> dict[str, Any] | None:
    raw = await redis.get(QUOTE_KEY.format(symbol=symbol))
    return None if raw is None else json.loads(raw)


async def submit(engine: AsyncEngine, redis: Redis, coroutine_factory: Any) -> Sent:
    """Run an intake helper in its own committed transaction, then publish the command."""
    async with engine.begin() as conn:
        sent = await coroutine_factory(conn)
    assert sent is not None, "intake refused the order (reservation failed)"
    await publish(redis, [sent])
    return sent


async def assert_invariants(engine: AsyncEngine) -> None:
    violations = await find_violations(engine, pending_grace_seconds=0)
    assert violations == []


async def wait_consumed(redis: Redis, stream: str) -> None:
    """Every entry of an order stream delivered to the engine and acknowledged."""

    async def outstanding() -> int:
        groups = await redis.xinfo_groups(stream)
        return sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)

    await eventually(outstanding, lambda n: n == 0, message=f"{stream} not consumed")


def dec(value: str) -> Decimal:
    return Decimal(value)
