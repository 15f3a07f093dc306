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

from sqlalchemy import insert, select, update
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


async def consume_code(
    db: AsyncSession | AsyncConnection,
    *,
    secret: str,
    client_id: uuid.UUID,
    purpose: CodePurpose,
    code: str,
    now: datetime,
) -> bool:
    """Spend the code if it is live and matches; True only for the one caller that spends it."""
    if not well_formed_code(code):
        return False
    rows = (
        await db.execute(
            select(VerificationCode.id, VerificationCode.code_hash).where(
                VerificationCode.client_id == client_id,
                VerificationCode.purpose == purpose,
                VerificationCode.consumed_at.is_(None),
                VerificationCode.expires_at > now,
            )
        )
    ).all()
    expected = hash_code(secret, client_id, purpose, code)
    for code_id, code_hash in rows:
        if hmac.compare_digest(code_hash, expected):
            # Conditional update: of two concurrent requests with the code, one wins.
            spent = await db.execute(
                update(VerificationCode)
                .where(VerificationCode.id == code_id, VerificationCode.consumed_at.is_(None))
                .values(consumed_at=now)
                .returning(VerificationCode.id)
            )
            return spent.first() is not None
    return False
