"""Queries of the accounts domain: accounts, deposits, the cash ledger and positions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.db.models import Account, Deposit, Instrument, LedgerEntry, Position


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: uuid.UUID
    currency: str
    cash: Decimal
    reserved_cash: Decimal


@dataclass(frozen=True, slots=True)
class DepositRow:
    id: uuid.UUID
    amount: Decimal
    currency: str
    status: str
    balance_after: Decimal
    created_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerRow:
    id: uuid.UUID
    seq: int
    kind: str
    amount: Decimal
    balance_after: Decimal
    reference_id: uuid.UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PositionRow:
    symbol: str
    quantity: int
    reserved_quantity: int
    avg_cost: Decimal
    last_price: Decimal


async def get_account(session: AsyncSession, account_id: uuid.UUID) -> AccountRow | None:
    """The account's balances, or None."""
    row = (
        await session.execute(
            select(Account.id, Account.currency, Account.cash, Account.reserved_cash).where(
                Account.id == account_id
            )
        )
    ).first()
    return AccountRow(row.id, row.currency, row.cash, row.reserved_cash) if row else None


async def credit_cash(session: AsyncSession, account_id: uuid.UUID, amount: Decimal) -> Decimal:
    """Add `amount` to the account's cash; the new balance.

    One atomic UPDATE: its row lock serialises concurrent credits of one account until
    the transaction ends, so the balance returned is exact and the ledger entries of
    an account are written in balance order.
    """
    balance: Decimal = (
        await session.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(cash=Account.cash + amount, version=Account.version + 1, updated_at=func.now())
            .returning(Account.cash)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    return balance


async def insert_deposit(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    balance_after: Decimal,
    idempotency_key: str | None,
) -> DepositRow:
    """Record a settled deposit and its ledger entry (same timestamp, same balance)."""
    deposit = (
        await session.execute(
            insert(Deposit)
            .values(
                id=uuid.uuid4(),
                account_id=account_id,
                amount=amount,
                currency=currency,
                status="settled",
                balance_after=balance_after,
                idempotency_key=idempotency_key,
                # clock_timestamp(), not now(): taken under the account's row lock, so
                # "newest first" agrees with the balance order even for concurrent
                # deposits (now() is the transaction's start time).
                created_at=func.clock_timestamp(),
            )
            .returning(
                Deposit.id,
                Deposit.amount,
                Deposit.currency,
                Deposit.status,
                Deposit.balance_after,
                Deposit.created_at,
            )
        )
    ).one()
    await session.execute(
        insert(LedgerEntry).values(
            id=uuid.uuid4(),
            account_id=account_id,
            kind="deposit",
            amount=amount,
            balance_after=balance_after,
            reference_id=deposit.id,
            created_at=deposit.created_at,
        )
    )
    return DepositRow(*deposit)


async def list_deposits(
    session: AsyncSession,
    account_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[DepositRow]:
    """Deposits of an account, newest first, strictly after the `(created_at, id)` key."""
    query = select(
        Deposit.id,
        Deposit.amount,
        Deposit.currency,
        Deposit.status,
        Deposit.balance_after,
        Deposit.created_at,
    ).where(Deposit.account_id == account_id)
    if after is not None:
        query = query.where(tuple_(Deposit.created_at, Deposit.id) < tuple_(*after))
    query = query.order_by(Deposit.created_at.desc(), Deposit.id.desc()).limit(limit)
    return [DepositRow(*row) for row in (await session.execute(query)).all()]


async def list_ledger(
    session: AsyncSession, account_id: uuid.UUID, *, limit: int, after_seq: int | None
) -> list[LedgerRow]:
    """Ledger entries of an account, newest first, strictly before sequence `after_seq`."""
    query = select(
        LedgerEntry.id,
        LedgerEntry.seq,
        LedgerEntry.kind,
        LedgerEntry.amount,
        LedgerEntry.balance_after,
        LedgerEntry.reference_id,
        LedgerEntry.created_at,
    ).where(LedgerEntry.account_id == account_id)
    if after_seq is not None:
        query = query.where(LedgerEntry.seq < after_seq)
    query = query.order_by(LedgerEntry.seq.desc()).limit(limit)
    return [LedgerRow(*row) for row in (await session.execute(query)).all()]


async def list_positions(session: AsyncSession, account_id: uuid.UUID) -> list[PositionRow]:
    """Non-empty positions of an account with their instrument's last price, by symbol."""
    query = (
        select(
            Position.symbol,
            Position.quantity,
            Position.reserved_quantity,
            Position.avg_cost,
            func.coalesce(Instrument.last_price, Instrument.reference_price),
        )
        .join(Instrument, Instrument.symbol == Position.symbol)
        .where(Position.account_id == account_id, Position.quantity > 0)
        .order_by(Position.symbol)
    )
    return [PositionRow(*row) for row in (await session.execute(query)).all()]
