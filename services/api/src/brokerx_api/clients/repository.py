"""Queries on `client` (and the cash account created with it)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.db.models import Account, Client


async def get_by_email(session: AsyncSession, email: str) -> Client | None:
    """The client with this (normalised) e-mail."""
    result = await session.execute(select(Client).where(Client.email == email))
    return result.scalar_one_or_none()


async def get_by_id(session: AsyncSession, client_id: uuid.UUID) -> Client | None:
    return await session.get(Client, client_id, populate_existing=True)


async def email_exists(session: AsyncSession, email: str) -> bool:
    result = await session.execute(select(Client.id).where(Client.email == email))
    return result.first() is not None


async def create_pending_client(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str,
    first_name: str,
    last_name: str,
    date_of_birth: date,
    address: str,
    phone: str | None,
) -> Client:
    """Insert the client (`pending`) and its USD cash account at 0; flush raises on a duplicate."""
    client = Client(
        id=uuid.uuid4(),
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        date_of_birth=date_of_birth,
        address=address,
        phone=phone,
        status="pending",
    )
    session.add(client)
    await session.flush()
    session.add(Account(id=uuid.uuid4(), client_id=client.id))
    await session.flush()
    await session.refresh(client)
    return client


async def activate(session: AsyncSession, client_id: uuid.UUID, now: datetime) -> bool:
    """pending → active; False when the client was not pending any more."""
    result = await session.execute(
        update(Client)
        .where(Client.id == client_id, Client.status == "pending")
        .values(status="active", verified_at=now)
        .returning(Client.id)
    )
    return result.first() is not None


async def count_failure(
    session: AsyncSession,
    client_id: uuid.UUID,
    *,
    counter: str,
    max_failures: int,
    lock_until: datetime,
) -> datetime | None:
    """Add one consecutive failure; at `max_failures` lock the account and reset the count.

    Returns the new `locked_until` when this failure locked the account. A single UPDATE
    so concurrent failures are all counted.
    """
    column = getattr(Client, counter)
    reaches_limit = column + 1 >= max_failures
    result = await session.execute(
        update(Client)
        .where(Client.id == client_id)
        .values(
            {
                column: case((reaches_limit, 0), else_=column + 1),
                Client.locked_until: case((reaches_limit, lock_until), else_=Client.locked_until),
            }
        )
        .returning(column, Client.locked_until)
        .execution_options(synchronize_session=False)
    )
    count, locked_until = result.one()
    # The count only returns to 0 when this very failure reached the limit.
    return locked_until if count == 0 else None


async def update_client(session: AsyncSession, client_id: uuid.UUID, **values: Any) -> None:
    """Set columns of one client."""
    await session.execute(
        update(Client)
        .where(Client.id == client_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def accept_totp_step(session: AsyncSession, client_id: uuid.UUID, step: int) -> bool:
    """Record `step` as the last accepted TOTP step unless an equal or later one was used.

    Conditional, so two concurrent requests with the same code cannot both pass.
    """
    result = await session.execute(
        update(Client)
        .where(
            Client.id == client_id,
            (Client.totp_last_step.is_(None)) | (Client.totp_last_step < step),
        )
        .values(totp_last_step=step)
        .returning(Client.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None
