"""The worker plans each statement for its arguments (`brokerx_worker.database`).

On a pooled connection PostgreSQL switches a prepared statement to a generic plan after
five executions. The notifier's batch read, planned that way while `client_order` was
small, scanned the whole table as it grew. Through the worker's engine it stays an
index lookup.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_worker.database import worker_engine
from brokerx_worker.jobs.confirmations import RECIPIENTS_SQL
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.factories import create_client
from tests.support.intake import new_account
from tests.support.plans import CLIENT_ORDER_SEQ_SCANS, WARM_CALLS, grow_client_order
from tests.support.servers import ServerUrls

pytestmark = pytest.mark.usefixtures("instruments")


async def test_the_notifier_read_scans_no_whole_table_after_it_grew(
    engine: AsyncEngine, servers: ServerUrls, database_url: str
) -> None:
    client = await create_client(engine)
    others = await new_account(engine, "10000000.00")  # their orders grow the table
    worker = worker_engine(WorkerSettings(**settings_overrides(servers, database_url)))
    try:
        async with worker.connect() as connection:  # one connection: its plans are cached

            async def recipients() -> list[str]:
                rows = await connection.execute(
                    RECIPIENTS_SQL, {"clients": [client.client_id], "orders": [uuid.uuid4()]}
                )
                return [row.email for row in rows]

            # While the table is small, more executions than PostgreSQL's five custom plans.
            for _ in range(WARM_CALLS):
                assert await recipients() == [client.email]
                await connection.commit()
            await grow_client_order(engine, others)

            emails = await recipients()  # in the transaction the scan count reads
            scans = (await connection.execute(text(CLIENT_ORDER_SEQ_SCANS))).scalar_one()
            await connection.rollback()
    finally:
        await worker.dispose()

    assert emails == [client.email]
    assert scans == 0
