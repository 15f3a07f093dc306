"""The audit trail: one append-only `audit_event` row per security-relevant decision.

Write the event in the same transaction as the change it describes, so the trail and
the state can never disagree (a refused login commits its event on its own).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from brokerx_core.db.models import AuditEvent

_SHORT = 64  # ip and correlation_id columns are VARCHAR(64)
_USER_AGENT_MAX = 512


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None


async def record_audit(
    session_or_conn: AsyncSession | AsyncConnection,
    action: str,
    client_id: uuid.UUID | None,
    ip: str | None,
    user_agent: str | None,
    correlation_id: str | None,
    **details: Any,
) -> None:
    """Insert an audit event; `details` must be JSON-able (UUIDs, datetimes become text)."""
    # Round-trip through JSON so UUIDs, datetimes and Decimals are stored as text.
    payload = json.loads(json.dumps(details, default=str))
    await session_or_conn.execute(
        insert(AuditEvent).values(
            client_id=client_id,
            action=action[:_SHORT],
            ip=_clip(ip, _SHORT),
            user_agent=_clip(user_agent, _USER_AGENT_MAX),
            correlation_id=_clip(correlation_id, _SHORT),
            details=payload,
        )
    )
