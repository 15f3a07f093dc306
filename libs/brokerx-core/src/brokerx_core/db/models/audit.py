"""Append-only audit trail and the e-mail log that makes sending idempotent."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from brokerx_core.db.base import Base


class AuditEvent(Base):
    """Who did what, from where. UPDATE and DELETE are refused by a trigger."""

    __tablename__ = "audit_event"
    __table_args__ = (Index(None, "client_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.now())
    client_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, object]] = mapped_column(JSONB, server_default="{}")


class EmailMessage(Base):
    """One e-mail, keyed by what caused it, so a job that runs twice sends once."""

    __tablename__ = "email_message"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    client_id: Mapped[uuid.UUID | None]
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(server_default="0")
