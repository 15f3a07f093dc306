"""The api's intake connections find rows by key however small a table was when a
statement's plan was cached (`brokerx_api.orders.intake.intake_connector`).

PostgreSQL keeps a generic plan per statement and connection after five calls; made
while `client_order` was nearly empty, a lookup by id was a scan of the whole table,
kept as the table grew.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.orders.intake import intake_connector
from brokerx_api.settings import ApiSettings
from brokerx_core.intake.records import ORDERS_BY_IDS_SQL
from tests.conftest import settings_overrides
from tests.support.intake import new_account
from tests.support.orders_bulk import OrderSpec, insert_orders_bulk
from tests.support.plans import CLIENT_ORDER_SEQ_SCANS, WARM_CALLS, grow_client_order
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")


async def test_a_lookup_by_id_scans_no_whole_table_after_it_grew(
    engine: AsyncEngine, servers: ServerUrls, database_url: str
) -> None:
    account = await new_account(engine, "10000000.00")
    async with engine.begin() as conn:
        spec = OrderSpec(account, "AAPL", "buy", 1, Decimal("190.00"))
        await insert_orders_bulk(conn, [spec], resting=True)
        first = (await conn.execute(text("SELECT id FROM client_order"))).scalar_one()
    connect = intake_connector(ApiSettings(**settings_overrides(servers, database_url)))
    connection = await connect()
    try:
        # While the table is small, more calls than PostgreSQL's five custom plans.
        for _ in range(WARM_CALLS):
            rows = await connection.fetch(ORDERS_BY_IDS_SQL, [first, uuid.uuid4()])
            assert [row["id"] for row in rows] == [first]
        await grow_client_order(engine, account)

        transaction = connection.transaction()
        await transaction.start()
        rows = await connection.fetch(ORDERS_BY_IDS_SQL, [first])
        scans = await connection.fetchval(CLIENT_ORDER_SEQ_SCANS)
        await transaction.rollback()
    finally:
        await connection.close()

    assert [row["id"] for row in rows] == [first]
    assert scans == 0
