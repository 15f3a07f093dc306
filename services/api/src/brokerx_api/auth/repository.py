"""Queries on login sessions (`auth_session`) and their refresh tokens (`refresh_token`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.db.models import AuthSession, RefreshToken


@dataclass(frozen=True, slots=True)
class SpentToken:
    session_id: uuid.UUID
    client_id: uuid.UUID
    expires_at: datetime
    session_expires_at: datetime
    session_revoked: bool


async def create_session(
    session: AsyncSession,
    *,
    client_id: uuid.UUID,
    now: datetime,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
) -> uuid.UUID:
    session_id = uuid.uuid4()
    await session.execute(
        insert(AuthSession).values(
            id=session_id,
            client_id=client_id,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
            ip=ip[:64] if ip else None,
            user_agent=user_agent[:512] if user_agent else None,
        )
    )
    return session_id


async def add_refresh_token(
    session: AsyncSession,
    session_id: uuid.UUID,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    await session.execute(
        insert(RefreshToken).values(
            id=uuid.uuid4(),
            session_id=session_id,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
        )
    )


async def spend_refresh_token(
    session: AsyncSession, token_hash: str, now: datetime
) -> SpentToken | None:
    """Mark the token spent if it was not; None when unknown or already spent."""
    spent = (
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == token_hash, RefreshToken.spent_at.is_(None))
            .values(spent_at=now)
            .returning(RefreshToken.session_id, RefreshToken.expires_at)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if spent is None:
        return None
    row = (
        await session.execute(
            select(AuthSession.client_id, AuthSession.expires_at, AuthSession.revoked_at)
            .where(AuthSession.id == spent.session_id)
            .with_for_update()
        )
    ).one()
    return SpentToken(
        session_id=spent.session_id,
        client_id=row.client_id,
        expires_at=spent.expires_at,
        session_expires_at=row.expires_at,
        session_revoked=row.revoked_at is not None,
    )


async def session_of_spent_token(session: AsyncSession, token_hash: str) -> uuid.UUID | None:
    """The session of a refresh token that exists but was already spent."""
    row = (
        await session.execute(
            select(RefreshToken.session_id).where(
                RefreshToken.token_hash == token_hash, RefreshToken.spent_at.is_not(None)
            )
        )
    ).first()
    return row.session_id if row else None


async def revoke_session(
    session: AsyncSession, session_id: uuid.UUID, now: datetime, reason: str
) -> tuple[uuid.UUID, bool] | None:
    """Revoke the session; returns (client_id, was_live) or None when it does not exist."""
    row = (
        await session.execute(
            select(AuthSession.client_id, AuthSession.revoked_at)
            .where(AuthSession.id == session_id)
            .with_for_update()
        )
    ).first()
    if row is None:
        return None
    if row.revoked_at is None:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == session_id)
            .values(revoked_at=now, revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
    return row.client_id, row.revoked_at is None


async def revoke_other_sessions(
    session: AsyncSession, client_id: uuid.UUID, keep: uuid.UUID, now: datetime, reason: str
) -> list[uuid.UUID]:
    """Revoke every live session of the client except `keep`; returns the revoked ids."""
    result = await session.execute(
        update(AuthSession)
        .where(
            AuthSession.client_id == client_id,
            AuthSession.id != keep,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now,
        )
        .values(revoked_at=now, revoked_reason=reason)
        .returning(AuthSession.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def touch_session(session: AsyncSession, session_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id)
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
