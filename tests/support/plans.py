"""Cached query plans made on a small table (the frozen-plan tests).

PostgreSQL keeps a generic plan per prepared statement and connection after five
executions. A test runs a statement `WARM_CALLS` times while `client_order` is small,
grows the table with `grow_client_order` (no ANALYZE, so the cached plan stays), then
reads `CLIENT_ORDER_SEQ_SCANS` inside the transaction of one more call.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.orders_bulk import OrderSpec, insert_orders_bulk

# More executions than PostgreSQL's five custom plans.
WARM_CALLS = 8
CLIENT_ORDER_SEQ_SCANS = (
    "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'client_order'"
)


async def grow_client_order(engine: AsyncEngine, account: uuid.UUID, rows: int = 20_000) -> None:
    """Insert `rows` resting AAPL buys of `account` (funded for them), without ANALYZE."""
    async with engine.begin() as conn:
        spec = OrderSpec(account, "AAPL", "buy", 1, Decimal("190.00"))
        await insert_orders_bulk(conn, [spec] * rows, resting=True)
