"""`python -m brokerx_api.auth.rekey`: every stored TOTP secret under the first key.

Run it where TOTP_ENCRYPTION_KEYS is (the api container, docs/operations.md):

* once after deploying the release that introduced encryption: the secrets written
  before it are plain base32, which the api keeps reading as they are until then;
* after a key rotation (new key first, old key still listed), before removing the old
  key from TOTP_ENCRYPTION_KEYS;
* with `--plaintext`, only before rolling back to a release older than the encryption
  (it cannot read a token): every secret is written back in plain text.

Idempotent: values already in the wanted form are left alone. Rows are read and
rewritten in batches, each in its own transaction under `FOR UPDATE`, so a concurrent
enrolment or switch to e-mailed codes is never overwritten. A value no key decrypts is
reported by client id, left as it is, and makes the command exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass, field

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.settings import ApiSettings
from brokerx_core.auth.secretbox import SecretBox, UndecryptableSecret, is_legacy_plain
from brokerx_core.db import create_engine
from brokerx_core.db.models import Client

COLUMNS = ("totp_secret", "totp_pending_secret")


@dataclass
class RekeyReport:
    rewritten: int = 0
    unchanged: int = 0
    undecryptable: list[tuple[uuid.UUID, str]] = field(default_factory=list)


def converted(box: SecretBox, stored: str, *, plaintext: bool) -> str | None:
    """The new value of `stored`, or None when it already is what is wanted."""
    if plaintext:
        return None if is_legacy_plain(stored) else box.decrypt(stored)
    return None if box.is_current(stored) else box.reseal(stored)


async def rekey(
    engine: AsyncEngine, box: SecretBox, *, plaintext: bool = False, batch_size: int = 500
) -> RekeyReport:
    """Re-encrypt (or, with `plaintext`, decrypt) every stored TOTP secret."""
    report = RekeyReport()
    after: uuid.UUID | None = None
    while True:
        query = select(Client.id, Client.totp_secret, Client.totp_pending_secret).where(
            or_(Client.totp_secret.is_not(None), Client.totp_pending_secret.is_not(None))
        )
        if after is not None:
            query = query.where(Client.id > after)
        async with engine.begin() as conn:
            rows = (
                await conn.execute(query.order_by(Client.id).limit(batch_size).with_for_update())
            ).all()
            if not rows:
                return report
            for client_id, *values in rows:
                changes: dict[str, str] = {}
                for column, stored in zip(COLUMNS, values, strict=True):
                    if stored is None:
                        continue
                    try:
                        new = converted(box, stored, plaintext=plaintext)
                    except UndecryptableSecret:
                        report.undecryptable.append((client_id, column))
                        continue
                    if new is None:
                        report.unchanged += 1
                    else:
                        changes[column] = new
                        report.rewritten += 1
                if changes:
                    await conn.execute(
                        update(Client).where(Client.id == client_id).values(**changes)
                    )
        after = rows[-1][0]


async def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m brokerx_api.auth.rekey",
        description="Encrypt every stored TOTP secret under the first TOTP_ENCRYPTION_KEYS key.",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="decrypt instead: only before rolling back below the release that encrypts",
    )
    args = parser.parse_args(argv)
    settings = ApiSettings()
    engine = create_engine(settings, pool_size=1)
    try:
        report = await rekey(engine, settings.totp_box(), plaintext=args.plaintext)
    finally:
        await engine.dispose()
    for client_id, column in report.undecryptable:
        print(f"UNDECRYPTABLE client {client_id} {column}: no configured key decrypts it")  # noqa: T201
    print(  # noqa: T201
        f"rekey: {report.rewritten} rewritten, {report.unchanged} already"
        f" {'plain' if args.plaintext else 'under the first key'},"
        f" {len(report.undecryptable)} undecryptable"
    )
    return 1 if report.undecryptable else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
