"""`intake_place_batch` plans its `client_order_id` lookup for each call

PL/pgSQL caches a plan per statement per connection: five custom plans, then a generic
one (planned without the argument values) if it does not look dearer. The api's intake
connections live as long as the api, so a generic plan made in the first seconds of a
database's life, when `client_order` holds a few rows, stays in use while the table
grows, until an ANALYZE of the table invalidates it.

The lookup of earlier `client_order_id`s joins the batch's keys with `client_order`.
On a small table its generic plan is a hash join over a sequential scan of the whole
table: on PostgreSQL 15, 26 ms a call once the table held 142,000 rows, against
0.09 ms with the index lookups a plan for the actual keys chooses. In `make bench` the
lookup cost 3.5 ms a call (21 % of PostgreSQL's statement time) in one closed loop and
0.14 ms in another, by whichever plan the first calls left behind.

The lookup now runs through EXECUTE, which plans it for the call's keys and the
table's current size every time (well under a millisecond for this one join). Setting
`plan_cache_mode = force_custom_plan` on the whole function was measured too and
dropped: planning its large write statement at every call added ~1.3 ms a call.

The function is 0007's with only that statement changed (taken from 0007's text, so
the two cannot drift); the downgrade puts 0007's back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 20:00:00
"""

from collections.abc import Sequence

from alembic import op

from brokerx_core.migrate import earlier_function

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CACHED_LOOKUP = """
        FOR v_row IN
            SELECT t.i, o.id
              FROM unnest(p_account, p_client_order_id) WITH ORDINALITY AS t(a, c, i)
              JOIN client_order o ON o.account_id = t.a AND o.client_order_id = t.c
        LOOP
"""
_PLANNED_LOOKUP = """
        -- EXECUTE: planned for these keys (a cached generic plan scans the table: 0009).
        FOR v_row IN EXECUTE
            'SELECT t.i, o.id
               FROM unnest($1, $2) WITH ORDINALITY AS t(a, c, i)
               JOIN client_order o ON o.account_id = t.a AND o.client_order_id = t.c'
            USING p_account, p_client_order_id
        LOOP
"""


def _function_0007() -> str:
    """0007's `intake_place_batch`, as a statement that replaces the one in place."""
    return earlier_function("0007_set_based_intake.py")


def function_sql() -> str:
    """0007's `intake_place_batch` with the lookup through EXECUTE."""
    original = _function_0007()
    if original.count(_CACHED_LOOKUP) != 1:
        raise RuntimeError("0007's client_order_id lookup is not where 0009 expects it")
    return original.replace(_CACHED_LOOKUP, _PLANNED_LOOKUP)


def upgrade() -> None:
    op.execute(function_sql())


def downgrade() -> None:
    op.execute(_function_0007())
