"""report outbox of the matching service

`report_outbox` holds the execution reports of committed batches until they are on the
`executions` stream: the engine inserts a batch's reports (the JSON it XADDs, one per
line: one row per batch, not per report) in the batch's own transaction and deletes
the row once published, so a crash between the commit and the XADD no longer loses
them (the shard's next owner republishes what is left, docs/trading.md "Execution
reports").

The primary key `(shard, id)` is the only index: the engine deletes published rows by
shard and id range, and republishes a shard's rows in id order, both along it. `id`
comes from an identity, so it grows with insertion order. `reports` is stored without
compression (STORAGE EXTERNAL): a row lives for one batch, compressing it would cost
more CPU than it saves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "report_outbox",
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("reports", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("shard", "id", name=op.f("pk_report_outbox")),
    )
    op.execute("ALTER TABLE report_outbox ALTER COLUMN reports SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("report_outbox")
