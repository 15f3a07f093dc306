"""The SQL round trips of a batch of new orders, and what makes an intake connection
unusable (`IntakeBatcher`'s flushers, `brokerx_core.intake.batcher`).

`place_batch` runs one intake call for prepared orders (retrying deadlocks and
serialization failures) and reads each order's outcome; `orders_by_client_order_ids`
finds the orders earlier requests created under the given `client_order_id`s, so that a
refused retry is answered as a replay.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from brokerx_core.intake.errors import IntakeError
from brokerx_core.intake.prepared import Placement, PreparedOrder, outcome_of, place_call
from brokerx_core.intake.records import ORDER_COLUMNS, ORDERS_BY_IDS_SQL, OrderRecord

_BY_CLIENT_ORDER_IDS = (
    f"SELECT {ORDER_COLUMNS} FROM client_order"
    " WHERE (account_id, client_order_id) IN"
    " (SELECT * FROM unnest($1::uuid[], $2::text[]))"
)
RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_ATTEMPTS = 5


async def place_batch(
    connection: Any, prepared: Sequence[PreparedOrder], shards: int, set_based_from: int
) -> list[Placement | IntakeError]:
    """One intake call for `prepared` (in lock order); each order's outcome, in order."""
    sql, arguments = place_call(prepared, set_based_from=set_based_from)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            rows = await connection.fetch(sql, *arguments)
            break
        except RETRYABLE:
            if attempt == _ATTEMPTS:
                raise
            await asyncio.sleep(0.002 * attempt)
    rows = sorted(rows, key=lambda row: row["r_index"])
    replayed = [row["r_order_id"] for row in rows if row["r_outcome"] == "replay"]
    existing: dict[uuid.UUID, OrderRecord] = {}
    if replayed:
        for row in await connection.fetch(ORDERS_BY_IDS_SQL, replayed):
            existing[row["id"]] = OrderRecord.from_mapping(row)
    return [outcome_of(p, row, existing, shards) for p, row in zip(prepared, rows, strict=True)]


async def orders_by_client_order_ids(
    connection: Any, keys: Sequence[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], OrderRecord]:
    """The existing orders of these (account, client_order_id) pairs, by pair."""
    if not keys:
        return {}
    rows = await connection.fetch(
        _BY_CLIENT_ORDER_IDS, [account for account, _ in keys], [key for _, key in keys]
    )
    return {
        (row["account_id"], row["client_order_id"]): OrderRecord.from_mapping(row) for row in rows
    }


def connection_lost(exc: BaseException, connection: Any) -> bool:
    """Whether `connection` must not be used again after `exc`."""
    if connection is None or connection.is_closed():
        return True
    # InternalClientError: asyncpg's protocol lost track of the connection's state (seen when
    # PostgreSQL terminates the backend while a statement starts): never use it again.
    lost = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
    if isinstance(exc, (*lost, asyncpg.InternalClientError)):
        return True
    state = getattr(exc, "sqlstate", "") or ""
    return state.startswith(("08", "57P"))


async def close_quietly(connection: Any) -> None:
    """Close `connection` (None: nothing), terminating it if it does not close in 2 s."""
    if connection is None:
        return
    try:
        await asyncio.wait_for(connection.close(), timeout=2.0)
    except Exception:  # already gone
        connection.terminate()
