"""Instruments, positions, orders, trades and the command outbox."""

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
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from brokerx_core.db.base import AVG_PRICE, CASH, PRICE, Base, TimestampMixin

ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
TIME_IN_FORCE = ("day", "gtc", "ioc", "fok")
ORDER_STATUSES = (
    "pending_new",
    "new",
    "partially_filled",
    "filled",
    "canceled",
    "expired",
    "rejected",
)
OPEN_STATUSES = ("pending_new", "new", "partially_filled")
TERMINAL_STATUSES = ("filled", "canceled", "expired", "rejected")


class Instrument(Base):
    __tablename__ = "instrument"
    __table_args__ = (
        CheckConstraint("tick_size > 0", name="tick_size_positive"),
        CheckConstraint("reference_price > 0", name="reference_price_positive"),
        CheckConstraint("status IN ('active', 'halted')", name="status"),
    )

    symbol: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tick_size: Mapped[Decimal] = mapped_column(PRICE, server_default=text("0.01"))
    reference_price: Mapped[Decimal] = mapped_column(PRICE)
    last_price: Mapped[Decimal | None] = mapped_column(PRICE)
    last_trade_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(12), server_default="active")


class Position(Base):
    """Shares an account holds in a symbol; `reserved_quantity` backs open sells."""

    __tablename__ = "position"
    __table_args__ = (
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
        CheckConstraint("reserved_quantity >= 0", name="reserved_non_negative"),
        CheckConstraint("reserved_quantity <= quantity", name="reserved_within_quantity"),
        CheckConstraint("avg_cost >= 0", name="avg_cost_non_negative"),
    )

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(ForeignKey("instrument.symbol"), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    reserved_quantity: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    avg_cost: Mapped[Decimal] = mapped_column(AVG_PRICE, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class ClientOrder(TimestampMixin, Base):
    """An order. The api inserts it `pending_new`; only the engine changes it after that
    (except reservation top-ups made by an accepted replace request)."""

    __tablename__ = "client_order"
    __table_args__ = (
        CheckConstraint(f"side IN {ORDER_SIDES}", name="side"),
        CheckConstraint(f"type IN {ORDER_TYPES}", name="type"),
        CheckConstraint(f"time_in_force IN {TIME_IN_FORCE}", name="time_in_force"),
        CheckConstraint(f"status IN {ORDER_STATUSES}", name="status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("filled_quantity >= 0", name="filled_non_negative"),
        CheckConstraint("filled_quantity <= quantity", name="filled_within_quantity"),
        CheckConstraint("reserved_amount >= 0", name="reserved_amount_non_negative"),
        CheckConstraint("reserved_quantity >= 0", name="reserved_quantity_non_negative"),
        CheckConstraint(
            "(type = 'limit' AND limit_price > 0) OR (type = 'market' AND limit_price IS NULL)",
            name="limit_price_matches_type",
        ),
        # Status agrees with filled_quantity (invariant 4).
        CheckConstraint(
            "(status <> 'filled' OR filled_quantity = quantity)"
            " AND (status NOT IN ('pending_new', 'new') OR filled_quantity = 0)"
            " AND (status <> 'partially_filled'"
            "      OR (filled_quantity > 0 AND filled_quantity < quantity))",
            name="status_agrees_with_fills",
        ),
        # A terminal order holds no reservation (invariant 4).
        CheckConstraint(
            f"status NOT IN {TERMINAL_STATUSES} OR (reserved_amount = 0 AND reserved_quantity = 0)",
            name="terminal_holds_no_reservation",
        ),
        UniqueConstraint("account_id", "client_order_id"),
        Index(None, "account_id", "created_at"),
        Index(
            "ix_client_order_open_by_symbol",
            "symbol",
            "priority_seq",
            postgresql_where=text(f"status IN {OPEN_STATUSES}"),
        ),
        # Intake counts an account's open orders on every order (migration 0002).
        Index(
            "ix_client_order_open_by_account",
            "account_id",
            "intake_seq",
            postgresql_where=text(f"status IN {OPEN_STATUSES}"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Intake order: recovery re-applies pending_new orders in this sequence.
    intake_seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(ForeignKey("instrument.symbol"))
    side: Mapped[str] = mapped_column(String(4))
    type: Mapped[str] = mapped_column(String(6))
    quantity: Mapped[int] = mapped_column(BigInteger)
    limit_price: Mapped[Decimal | None] = mapped_column(PRICE)
    time_in_force: Mapped[str] = mapped_column(String(3), server_default="day")
    status: Mapped[str] = mapped_column(String(16), server_default="pending_new")
    filled_quantity: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    avg_fill_price: Mapped[Decimal | None] = mapped_column(AVG_PRICE)
    # Cash held for a buy (limit × leaves, or collar × leaves for a market buy).
    reserved_amount: Mapped[Decimal] = mapped_column(CASH, server_default=text("0"))
    # Shares held for a sell (= leaves quantity while open).
    reserved_quantity: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    # Price that backs a market buy's reservation (the collar at intake).
    reservation_price: Mapped[Decimal | None] = mapped_column(PRICE)
    version: Mapped[int] = mapped_column(server_default=text("1"))
    reject_reason: Mapped[str | None] = mapped_column(String(64))
    # Time priority inside the book, assigned by the engine when the order rests.
    priority_seq: Mapped[int | None] = mapped_column(BigInteger)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))


class Trade(Base):
    """One execution between a buy and a sell order of different accounts."""

    __tablename__ = "trade"
    __table_args__ = (
        CheckConstraint("price > 0", name="price_positive"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("buyer_account_id <> seller_account_id", name="no_self_trade"),
        CheckConstraint("aggressor_side IN ('buy', 'sell')", name="aggressor_side"),
        # A pair of orders trades at most once: after a match one side is exhausted.
        # The constraint proves that no trade is ever applied twice.
        UniqueConstraint("buy_order_id", "sell_order_id"),
        Index(None, "symbol", "seq"),
        Index(None, "sell_order_id"),
        # GET /trades lists a client's fills newest first (migration 0002).
        Index(None, "buyer_account_id", "seq"),
        Index(None, "seller_account_id", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    symbol: Mapped[str] = mapped_column(ForeignKey("instrument.symbol"))
    price: Mapped[Decimal] = mapped_column(PRICE)
    quantity: Mapped[int] = mapped_column(BigInteger)
    buy_order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client_order.id"))
    sell_order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("client_order.id"))
    buyer_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id"))
    seller_account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("account.id"))
    aggressor_side: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class OutboxCommand(Base):
    """A command committed with its cause, waiting for the engine to consume it.

    The api publishes it right after commit (fast path); the engine deletes the row in
    the batch transaction that applies it; the relay republishes rows left behind.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(server_default=text("0"))
