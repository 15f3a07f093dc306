"""count the guesses made against each e-mailed code

`verification_code.attempts` counts the guesses checked against a code. A sign-up
verification code is spent after `VERIFICATION_CODE_MAX_ATTEMPTS` (5) of them, so a
code can no longer be guessed at the throttle's pace for its whole day of life; the
client asks for a new one (`POST /clients/verify/resend`). The count lives with the code:
a new code starts at 0, and the count goes when the code does.

Rollback-safe: a column with a constant default is added without rewriting the table
(PostgreSQL 11+), and code older than this release neither reads nor writes it (its
inserts get the default). A code spent by its attempts also has `consumed_at` set, so
older code refuses it too. The downgrade drops the column and its counts.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "verification_code",
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("verification_code", "attempts")
