"""`make bench --pg-waits` against a real PostgreSQL: a backend waiting on a row lock is
seen waiting, and the wait is charged to the connection that holds the lock."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.e2e.pg_waits import sample, summarize

pytestmark = pytest.mark.usefixtures("instruments")

UPDATE_AAPL = "UPDATE instrument SET last_trade_at = now() WHERE symbol = 'AAPL'"


async def _connect(engine: AsyncEngine, application_name: str) -> asyncpg.Connection:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(url, server_settings={"application_name": application_name})


async def _waiting_on_a_lock(connection: AsyncConnection, application_name: str) -> None:
    for _ in range(500):
        rows = await sample(connection)
        if any(row.app == application_name and row.wait == "Lock" for row in rows):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{application_name} never waited on a lock")


async def test_a_lock_wait_is_charged_to_the_connection_holding_the_lock(
    engine: AsyncEngine,
) -> None:
    holder = await _connect(engine, "bench-holder")
    waiter = await _connect(engine, "bench-waiter")
    try:
        async with engine.connect() as connection:
            # One sampling connection throughout: a look taken before the wait must not
            # hide the wait from the looks taken after it.
            before = summarize([await sample(connection)])
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("SELECT 1 FROM instrument WHERE symbol = 'AAPL' FOR UPDATE")
            blocked = asyncio.create_task(waiter.execute(UPDATE_AAPL))
            await _waiting_on_a_lock(connection, "bench-waiter")
            result = summarize([await sample(connection) for _ in range(3)])
        await transaction.rollback()
        await asyncio.wait_for(blocked, 10)
    finally:
        await holder.close()
        await waiter.close()

    assert "bench-waiter" not in before["backends"]
    assert result["backends"]["bench-waiter"] == {"lock": 1.0, "lock_share": 1.0}
    assert "bench-holder" not in result["backends"]  # idle in its transaction: not busy
    [charged] = result["blocked_by"]
    assert (charged["waiter"], charged["blocker"], charged["blocker_state"]) == (
        "bench-waiter",
        "bench-holder",
        "idle in transaction",
    )
    assert charged["blocker_query"].endswith("FOR UPDATE")
    assert charged["mean"] == 1.0
