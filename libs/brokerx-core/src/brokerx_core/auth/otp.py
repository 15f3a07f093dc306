"""E-mailed one-time codes (sign-up verification, MFA login): 6 digits, hashed, single use.

Only an HMAC-SHA256 of the code is stored, keyed by the server secret and bound to the
client and the purpose, so a database dump neither reveals live codes nor lets anyone
brute-force the 10^6 possibilities offline, and a code of one purpose never works
for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from brokerx_core.db.models import VerificationCode

CodePurpose = Literal["email_verification", "mfa_login"]
CODE_DIGITS = 6


def generate_code() -> str:
    """A uniformly random 6-digit code (leading zeros kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def well_formed_code(code: str) -> bool:
    """Whether `code` (surrounding spaces aside) is the form every issued code has:
    6 ASCII digits. Nothing else can match, nor always be hashed (a lone surrogate)."""
    code = code.strip()
    return len(code) == CODE_DIGITS and code.isascii() and code.isdigit()


def hash_code(secret: str, client_id: uuid.UUID, purpose: CodePurpose, code: str) -> str:
    """HMAC-SHA256 of the code bound to its client and purpose (hex)."""
    message = f"brokerx-otp:v1:{client_id}:{purpose}:{code.strip()}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


async def issue_code(
    db: AsyncSession | AsyncConnection,
    *,
    secret: str,
    client_id: uuid.UUID,
    purpose: CodePurpose,
    now: datetime,
    ttl: timedelta,
) -> tuple[uuid.UUID, str]:
    """Store a fresh code (superseding the client's earlier ones) and return (id, code).

    Only the latest code of a purpose is valid: a resend makes the previous mail useless.
    """
    await db.execute(
        update(VerificationCode)
        .where(
            VerificationCode.client_id == client_id,
            VerificationCode.purpose == purpose,
            VerificationCode.consumed_at.is_(None),
        )
        .values(consumed_at=now)
    )
    code = generate_code()
    code_id = uuid.uuid4()
    await db.execute(
        insert(VerificationCode).values(
            id=code_id,
            client_id=client_id,
            purpose=purpose,
            code_hash=hash_code(secret, client_id, purpose, code),
            expires_at=now + ttl,
        )
    )
    return code_id, code


async def codes_issued_within(
    db: AsyncSession | AsyncConnection,
    *,
    client_id: uuid.UUID,
    purpose: CodePurpose,
    now: datetime,
    ttl: timedelta,
    window: timedelta,
) -> int:
    """How many codes of this purpose the client was issued in the last `window`.

    Dated by the app clock that issued them (`expires_at` is issue time + `ttl`), not by
    the database's `created_at`, so a clock of the app's own is honoured.
    """
    issued_after = now - window + ttl
    result = await db.execute(
        select(func.count()).where(
            VerificationCode.client_id == client_id,
            VerificationCode.purpose == purpose,
            VerificationCode.expires_at > issued_after,
        )
    )
    return int(result.scalar_one())


async def consume_code(
    db: AsyncSession | AsyncConnection,
    *,
    secret: str,
    client_id: uuid.UUID,
    purpose: CodePurpose,
    code: str,
    now: datetime,
    max_attempts: int | None = None,
) -> bool:
    """Spend the code if it is live and matches; True only for the one caller that spends it.

    Every well-formed guess counts one attempt against the live code(s) of the client
    and purpose. With `max_attempts`, a code that has had that many attempts is spent
    (its `consumed_at` is set, so a release that ignores `attempts` refuses it too): the
    right code no longer works either, only a new one (`issue_code`) does. One
    conditional UPDATE counts, compares and spends, so concurrent guesses are all
    counted and at most `max_attempts` of them are ever compared with one code.
    """
    if not well_formed_code(code):
        return False
    expected = hash_code(secret, client_id, purpose, code)
    attempts = VerificationCode.attempts + 1
    matches = VerificationCode.code_hash == expected
    # An SQL comparison of HMACs: its timing tells nothing to whoever lacks the key.
    spends = matches if max_attempts is None else or_(matches, attempts >= max_attempts)
    live = [
        VerificationCode.client_id == client_id,
        VerificationCode.purpose == purpose,
        VerificationCode.consumed_at.is_(None),
        VerificationCode.expires_at > now,
    ]
    if max_attempts is not None:
        live.append(VerificationCode.attempts < max_attempts)
    # Row locks order concurrent callers: a second one with the code finds it spent.
    rows = (
        await db.execute(
            update(VerificationCode)
            .where(*live)
            .values(
                attempts=attempts,
                consumed_at=case((spends, now), else_=VerificationCode.consumed_at),
            )
            .returning(VerificationCode.code_hash)
            .execution_options(synchronize_session=False)
        )
    ).all()
    return any(hmac.compare_digest(code_hash, expected) for (code_hash,) in rows)
