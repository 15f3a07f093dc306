"""`Idempotency-Key` semantics (IETF draft-ietf-httpapi-idempotency-key-header).

A key is scoped to a client and an operation (`scope`, e.g. "deposit"). Within the
request's transaction the caller first `claim`s the key:

- a transaction-level advisory lock on (scope, client, key) is tried, never waited
  for: a request whose twin is still in flight answers 409 `idempotency_in_progress`;
- with the lock held, a stored first response is looked up: same request fingerprint
  → it is replayed, another fingerprint → 422 `idempotency_key_reused`;
- otherwise the caller applies the operation and `remember`s its response in the same
  transaction, so the effect and the record commit (or roll back) together.

The lock is released when the transaction ends, after its commit is visible, so the
next request with the key always finds the record.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_api.accounts.errors import IdempotencyInProgress, IdempotencyKeyReused
from brokerx_core.db.models import IdempotencyRecord

MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="Optional, at most 255 characters. Retrying with the same key and body"
        " applies the request once and replays its first response (200,"
        " `Idempotent-Replayed: true`).",
    ),
]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first response given to a key."""

    status: int
    body: dict[str, Any]


def fingerprint(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a request's canonical JSON: equal meaning → equal fingerprint.

    Callers pass the *parsed* request (e.g. amount normalised to cents), so `100`,
    `"100.0"` and `"100.00"` are one request.
    """
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(
    session: AsyncSession, *, client_id: uuid.UUID, scope: str, key: str, request_hash: str
) -> StoredResponse | None:
    """Lock the key for this transaction; the stored response to replay, or None.

    Raises `IdempotencyInProgress` when another transaction holds the key and
    `IdempotencyKeyReused` when the key's first request had another fingerprint.
    """
    # 64-bit hash: a collision between two live keys would only cost a spurious 409.
    acquired = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(hashtextextended(:lock_name, 0))"),
            {"lock_name": f"idempotency:{scope}:{client_id}:{key}"},
        )
    ).scalar_one()
    if not acquired:
        raise IdempotencyInProgress()
    record = (
        await session.execute(
            select(IdempotencyRecord).where(
                IdempotencyRecord.client_id == client_id,
                IdempotencyRecord.scope == scope,
                IdempotencyRecord.key == key,
            )
        )
    ).scalar_one_or_none()
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    return StoredResponse(record.response_status, dict(record.response_body))


async def remember(
    session: AsyncSession,
    *,
    client_id: uuid.UUID,
    scope: str,
    key: str,
    request_hash: str,
    response: StoredResponse,
) -> None:
    """Store the first response to a key (in the transaction that produced it)."""
    inserted = await session.execute(
        insert(IdempotencyRecord)
        .values(
            client_id=client_id,
            scope=scope,
            key=key,
            request_hash=request_hash,
            response_status=response.status,
            response_body=response.body,
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyRecord.key)
    )
    if inserted.first() is None:
        # Unreachable while the advisory lock is held; if it ever happens, the twin
        # request owns the key and this transaction must roll back its effect.
        raise IdempotencyInProgress()
