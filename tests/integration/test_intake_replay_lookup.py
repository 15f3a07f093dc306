"""The set-based intake's `client_order_id` lookup stays an index lookup as
`client_order` grows (migration 0009). PostgreSQL caches a generic plan per statement
and connection after five calls; made while the table was small, the lookup's was a
hash join over a scan of the whole table, kept as the table grew."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.db.base import utcnow
from brokerx_core.intake.prepared import (
    INSTRUMENTS_SQL,
    PreparedOrder,
    instrument_terms,
    place_call,
    prepare_order,
)
from tests.support.intake import RULES, new_account, order
from tests.support.plans import CLIENT_ORDER_SEQ_SCANS, WARM_CALLS, grow_client_order

pytestmark = pytest.mark.usefixtures("instruments")


async def test_a_batch_s_replay_lookup_reads_no_whole_table_after_it_grew(
    engine: AsyncEngine,
) -> None:
    account = await new_account(engine, "100000.00")
    others = await new_account(engine, "10000000.00")  # their orders grow the table
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(url)
    try:
        aapl = instrument_terms((await connection.fetch(INSTRUMENTS_SQL, ["AAPL"]))[0])

        async def place(*keys: str) -> list[str]:
            prepared: list[PreparedOrder] = [
                prepare_order(
                    account, order("buy", 1, client_order_id=key), aapl, RULES, now=utcnow()
                )
                for key in keys
            ]
            sql, arguments = place_call(prepared, set_based_from=1)  # the set-based function
            return [row["r_outcome"] for row in await connection.fetch(sql, *arguments)]

        # While the table is small, more calls than PostgreSQL's five custom plans.
        for call in range(WARM_CALLS):
            assert await place(f"early-{call}") == ["accepted"]
        await grow_client_order(engine, others)

        transaction = connection.transaction()
        await transaction.start()
        outcomes = await place("early-3", "late")
        scans = await connection.fetchval(CLIENT_ORDER_SEQ_SCANS)
        await transaction.rollback()
    finally:
        await connection.close()

    assert outcomes == ["replay", "accepted"]
    assert scans == 0
