"""Clients, their sessions and refresh tokens, and one-time codes."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from brokerx_core.db.base import Base, TimestampMixin

CLIENT_STATUSES = ("pending", "active", "suspended")
MFA_METHODS = ("none", "totp", "email")
CODE_PURPOSES = ("email_verification", "mfa_login")


class Client(TimestampMixin, Base):
    __tablename__ = "client"
    __table_args__ = (
        CheckConstraint(f"status IN {CLIENT_STATUSES}", name="status"),
        CheckConstraint(f"mfa_method IN {MFA_METHODS}", name="mfa_method"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("failed_login_count >= 0 AND failed_mfa_count >= 0", name="failure_counts"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date]
    address: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    is_market_maker: Mapped[bool] = mapped_column(server_default=text("false"))
    mfa_method: Mapped[str] = mapped_column(String(8), server_default="none")
    # Fernet tokens (brokerx_core.auth.secretbox), or a plain base32 secret written before
    # encryption existed (migration 0006); read through SecretBox.decrypt only.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_pending_secret: Mapped[str | None] = mapped_column(Text)
    # Last accepted TOTP time step: a code of that step or earlier is a replay.
    totp_last_step: Mapped[int | None]
    failed_login_count: Mapped[int] = mapped_column(server_default=text("0"))
    failed_mfa_count: Mapped[int] = mapped_column(server_default=text("0"))
    locked_until: Mapped[datetime | None]
    email_confirmations: Mapped[bool] = mapped_column(server_default=text("true"))
    verified_at: Mapped[datetime | None]
    reminders_sent: Mapped[int] = mapped_column(server_default=text("0"))


class VerificationCode(Base):
    """A hashed 6-digit code sent by e-mail (sign-up verification or MFA login)."""

    __tablename__ = "verification_code"
    __table_args__ = (
        CheckConstraint(f"purpose IN {CODE_PURPOSES}", name="purpose"),
        Index(None, "client_id", "purpose"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(24))
    code_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Guesses counted against this code (migration 0011); a sign-up code is spent after
    # VERIFICATION_CODE_MAX_ATTEMPTS of them (brokerx_core.auth.otp.consume_code).
    attempts: Mapped[int] = mapped_column(server_default=text("0"))


class AuthSession(Base):
    """A login session: survives refresh-token rotation, revoked as a whole."""

    __tablename__ = "auth_session"
    __table_args__ = (Index(None, "client_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)


class RefreshToken(Base):
    """One refresh token of a session, stored as a SHA-256 hash; spent on first use."""

    __tablename__ = "refresh_token"
    __table_args__ = (Index(None, "session_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("auth_session.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]
    spent_at: Mapped[datetime | None]
