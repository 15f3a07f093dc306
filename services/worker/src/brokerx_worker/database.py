"""The worker's database engine: every statement planned for its own arguments.

asyncpg prepares each statement once per connection, and PostgreSQL switches a prepared
statement to a generic plan (made without the argument values) after five executions
if that plan does not look dearer. The worker's pool lives as long as the worker, so a
generic plan made while a table was small stays in use as the table grows, until the
next ANALYZE of that table. That happened to the notifier's one query per batch
(`jobs.confirmations`): made on a nearly empty `client_order`, its plan was a hash join
over a scan of the whole table. In `make bench` it cost 5.5 ms a call in one closed
loop against 0.5 ms in another (by whichever plan the first calls left behind), 15 %
of PostgreSQL's statement time (docs/performance.md, fourteenth run).

`plan_cache_mode = force_custom_plan` plans every execution for its arguments and the
tables' current sizes. The worker runs a few statements a second (the notifier's batch
read, the outbox relay's polls, the jobs), each a small plan, so planning them every
time costs well under a percent of a core. The matching engine takes the other way
(`force_generic_plan` with sequential scans off), because its few large batch
statements cost more to plan than to run; the api's intake functions keep their
cached plans for the same reason (migration 0009 plans only their one join).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.db import create_engine
from brokerx_core.settings import BrokerXSettings

PLANNING = {"plan_cache_mode": "force_custom_plan"}


def worker_engine(settings: BrokerXSettings) -> AsyncEngine:
    """The engine the worker's jobs and background tasks share."""
    return create_engine(settings, server_settings=PLANNING)
