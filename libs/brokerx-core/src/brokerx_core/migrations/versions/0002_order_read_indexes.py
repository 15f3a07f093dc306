"""indexes for intake and order reads

- `ix_client_order_open_by_account`: intake counts an account's open orders on every
  order (too_many_open_orders), and GET /orders?status=open lists them; without it both
  walk every order the account ever placed.
- `ix_trade_buyer_account_id_seq` / `ix_trade_seller_account_id_seq`: GET /trades lists
  a client's fills newest first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_client_order_open_by_account",
        "client_order",
        ["account_id", "intake_seq"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending_new', 'new', 'partially_filled')"),
    )
    op.create_index(
        op.f("ix_trade_buyer_account_id_seq"), "trade", ["buyer_account_id", "seq"], unique=False
    )
    op.create_index(
        op.f("ix_trade_seller_account_id_seq"), "trade", ["seller_account_id", "seq"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_trade_seller_account_id_seq"), table_name="trade")
    op.drop_index(op.f("ix_trade_buyer_account_id_seq"), table_name="trade")
    op.drop_index("ix_client_order_open_by_account", table_name="client_order")
