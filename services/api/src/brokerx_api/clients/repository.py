"""Queries on `client` (and the cash account created with it)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import case, or_, select, update
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


@dataclass(frozen=True, slots=True)
class Reservation:
    """An attempt counted as a failure before it was checked (`reserve_attempt`)."""

    # The lock this very attempt set, being the `max_failures`-th in a row; else None.
    locked_until: datetime | None


async def reserve_attempt(
    session: AsyncSession,
    client_id: uuid.UUID,
    *,
    counter: str,
    max_failures: int,
    now: datetime,
    lock_until: datetime,
) -> Reservation | None:
    """Count one attempt as a failure before it is checked; None when the account is locked.

    A single conditional UPDATE: the row lock orders concurrent attempts, and none is
    counted (nor may be checked) once one of them set the lock, so at most
    `max_failures` attempts are decided per lock window however many arrive at once.
    The attempt that reaches the limit locks the account and resets the count (five
    more failures are needed after a lock lifts). A right answer gives the reservation
    back through `settle_success`.
    """
    column = getattr(Client, counter)
    reaches_limit = column + 1 >= max_failures
    row = (
        await session.execute(
            update(Client)
            .where(
                Client.id == client_id,
                or_(Client.locked_until.is_(None), Client.locked_until <= now),
            )
            .values(
                {
                    column: case((reaches_limit, 0), else_=column + 1),
                    Client.locked_until: case(
                        (reaches_limit, lock_until), else_=Client.locked_until
                    ),
                }
            )
            .returning(column, Client.locked_until)
            .execution_options(synchronize_session=False)
        )
    ).first()
    if row is None:
        return None
    count, locked_until = row
    # The count only returns to 0 when this very attempt reached the limit.
    return Reservation(locked_until if count == 0 else None)


async def settle_success(
    session: AsyncSession,
    client_id: uuid.UUID,
    *,
    counter: str,
    now: datetime,
    reservation: Reservation,
) -> bool:
    """End the run of failures after a right answer; False when the account is locked.

    A lock set by a concurrent attempt while this one was being checked stands, and the
    right answer must then look like any other attempt on a locked account (no oracle).
    The lock this attempt's own reservation set is lifted: nothing else was counted
    since (the lock refused every other reservation).
    """
    own_lock = reservation.locked_until
    unlocked = or_(Client.locked_until.is_(None), Client.locked_until <= now)
    if own_lock is not None:
        unlocked = or_(unlocked, Client.locked_until == own_lock)
    values: dict[Any, Any] = {getattr(Client, counter): 0}
    if own_lock is not None:
        values[Client.locked_until] = case(
            (Client.locked_until == own_lock, None), else_=Client.locked_until
        )
    row = (
        await session.execute(
            update(Client)
            .where(Client.id == client_id, unlocked)
            .values(values)
            .returning(Client.id)
            .execution_options(synchronize_session=False)
        )
    ).first()
    return row is not None


async def locked_until(session: AsyncSession, client_id: uuid.UUID) -> datetime | None:
    """The client's `locked_until` as committed now (not an earlier copy)."""
    result = await session.execute(select(Client.locked_until).where(Client.id == client_id))
    return result.scalar_one_or_none()


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
