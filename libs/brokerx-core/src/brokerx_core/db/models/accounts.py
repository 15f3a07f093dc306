"""Cash accounts, the cash ledger, deposits, idempotency records and share grants."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from brokerx_core.db.base import CASH, Base, TimestampMixin

LEDGER_KINDS = ("deposit", "withdrawal", "buy", "sell", "fee")


class Account(TimestampMixin, Base):
    """A client's USD cash account. `reserved_cash` backs open buy orders."""

    __tablename__ = "account"
    __table_args__ = (
        CheckConstraint("cash >= 0", name="cash_non_negative"),
        CheckConstraint("reserved_cash >= 0", name="reserved_cash_non_negative"),
        CheckConstraint("reserved_cash <= cash", name="reserved_within_cash"),
        CheckConstraint("currency = 'USD'", name="currency"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("client.id", ondelete="CASCADE"), unique=True
    )
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    cash: Mapped[Decimal] = mapped_column(CASH, server_default=text("0"))
    reserved_cash: Mapped[Decimal] = mapped_column(CASH, server_default=text("0"))
    version: Mapped[int] = mapped_column(server_default=text("0"))


class LedgerEntry(Base):
    """Append-only cash movement. `amount` is signed; `balance_after` is cash after it."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        CheckConstraint(f"kind IN {LEDGER_KINDS}", name="kind"),
        CheckConstraint("amount <> 0", name="amount_non_zero"),
        CheckConstraint("balance_after >= 0", name="balance_after_non_negative"),
        # One movement per (account, kind, reference): a trade or deposit applies once.
        UniqueConstraint("account_id", "kind", "reference_id"),
        Index(None, "account_id", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(CASH)
    balance_after: Mapped[Decimal] = mapped_column(CASH)
    reference_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Deposit(Base):
    __tablename__ = "deposit"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('settled')", name="status"),
        Index(None, "account_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(CASH)
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    status: Mapped[str] = mapped_column(String(16), server_default="settled")
    balance_after: Mapped[Decimal] = mapped_column(CASH)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class IdempotencyRecord(Base):
    """First response to an `Idempotency-Key`, scoped to a client and an operation."""

    __tablename__ = "idempotency_record"

    client_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("client.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int]
    response_body: Mapped[dict[str, object]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ShareGrant(Base):
    """Shares entering the system by seeding (the only way they do)."""

    __tablename__ = "share_grant"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(ForeignKey("instrument.symbol"))
    quantity: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
