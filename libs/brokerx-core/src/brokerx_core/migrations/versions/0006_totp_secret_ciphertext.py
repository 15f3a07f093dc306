"""room for encrypted TOTP secrets

`client.totp_secret` and `client.totp_pending_secret` now hold Fernet tokens
(brokerx_core.auth.secretbox) instead of the plain base32 secret, so that a database
dump (the nightly backups) no longer holds every client's second factor. A token of a
32-character secret is 140 characters, more than the old `VARCHAR(64)`: the columns
become `TEXT`. varchar → text needs no table rewrite in PostgreSQL, only a brief lock.

No data is changed here: encrypting needs the key, which only the api holds (never the
`migrate` container). Rows written before this release keep their plain value, which the
api still reads, until `python -m brokerx_api.auth.rekey` encrypts them
(docs/decisions.md, docs/operations.md).

The downgrade narrows the columns back and therefore refuses while any value is longer
than 64 characters, i.e. encrypted: run `python -m brokerx_api.auth.rekey --plaintext`
first.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("totp_secret", "totp_pending_secret")


def upgrade() -> None:
    for column in COLUMNS:
        op.alter_column(
            "client", column, type_=sa.Text(), existing_type=sa.String(64), existing_nullable=True
        )


def downgrade() -> None:
    encrypted = op.get_bind().scalar(
        sa.text(
            "SELECT count(*) FROM client"
            " WHERE length(totp_secret) > 64 OR length(totp_pending_secret) > 64"
        )
    )
    if encrypted:
        raise RuntimeError(
            f"{encrypted} client(s) hold an encrypted TOTP secret that VARCHAR(64) cannot"
            " hold: run `python -m brokerx_api.auth.rekey --plaintext` before downgrading"
        )
    for column in COLUMNS:
        op.alter_column(
            "client", column, type_=sa.String(64), existing_type=sa.Text(), existing_nullable=True
        )
