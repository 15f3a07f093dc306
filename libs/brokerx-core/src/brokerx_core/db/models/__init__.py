"""Every table of BrokerX, importable from one place."""

from brokerx_core.db.models.accounts import (
    LEDGER_KINDS,
    Account,
    Deposit,
    IdempotencyRecord,
    LedgerEntry,
    ShareGrant,
)
from brokerx_core.db.models.audit import AuditEvent, EmailMessage
from brokerx_core.db.models.identity import AuthSession, Client, RefreshToken, VerificationCode
from brokerx_core.db.models.trading import (
    OPEN_STATUSES,
    ORDER_STATUSES,
    TERMINAL_STATUSES,
    ClientOrder,
    Instrument,
    OutboxCommand,
    Position,
    Trade,
)

__all__ = [
    "LEDGER_KINDS",
    "OPEN_STATUSES",
    "ORDER_STATUSES",
    "TERMINAL_STATUSES",
    "Account",
    "AuditEvent",
    "AuthSession",
    "Client",
    "ClientOrder",
    "Deposit",
    "EmailMessage",
    "IdempotencyRecord",
    "Instrument",
    "LedgerEntry",
    "OutboxCommand",
    "Position",
    "RefreshToken",
    "ShareGrant",
    "Trade",
    "VerificationCode",
]
