"""An order row as intake and the readers see it (read with Core SQL, not the ORM)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.db.models.trading import OPEN_STATUSES

# The open statuses as SQL (matches the partial indexes' predicate).
OPEN_SQL = "('pending_new', 'new', 'partially_filled')"

# Columns selected wherever an OrderRecord is built (keep in step with `from_row`).
ORDER_COLUMNS = (
    "id, account_id, client_order_id, symbol, side, type, quantity, limit_price,"
    " time_in_force, status, filled_quantity, avg_fill_price, reserved_amount,"
    " reserved_quantity, version, reject_reason, request_hash, created_at, updated_at"
)

# Many orders by id in one round trip (asyncpg form).
ORDERS_BY_IDS_SQL = f"SELECT {ORDER_COLUMNS} FROM client_order WHERE id = ANY($1::uuid[])"


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: uuid.UUID
    account_id: uuid.UUID
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    quantity: int
    limit_price: Decimal | None
    time_in_force: str
    status: str
    filled_quantity: int
    avg_fill_price: Decimal | None
    reserved_amount: Decimal
    reserved_quantity: int
    version: int
    reject_reason: str | None
    request_hash: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> OrderRecord:
        """Build from a SQLAlchemy row that selected ORDER_COLUMNS (extra columns ignored)."""
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Any) -> OrderRecord:
        """Build from a mapping of ORDER_COLUMNS (an asyncpg record, a row's `_mapping`)."""
        return cls(
            id=m["id"],
            account_id=m["account_id"],
            client_order_id=m["client_order_id"],
            symbol=m["symbol"],
            side=m["side"],
            type=m["type"],
            quantity=m["quantity"],
            limit_price=m["limit_price"],
            time_in_force=m["time_in_force"],
            status=m["status"],
            filled_quantity=m["filled_quantity"],
            avg_fill_price=m["avg_fill_price"],
            reserved_amount=m["reserved_amount"],
            reserved_quantity=m["reserved_quantity"],
            version=m["version"],
            reject_reason=m["reject_reason"],
            request_hash=m["request_hash"],
            created_at=m["created_at"],
            updated_at=m["updated_at"],
        )

    @property
    def is_open(self) -> bool:
        """Still able to trade: pending_new, new or partially_filled."""
        return self.status in OPEN_STATUSES

    @property
    def leaves_quantity(self) -> int:
        """Shares still working: none once the order is terminal."""
        return self.quantity - self.filled_quantity if self.is_open else 0

    def with_reservation(self, amount: Decimal, quantity: int) -> OrderRecord:
        """The same record holding another reservation (after a top-up)."""
        return replace(self, reserved_amount=amount, reserved_quantity=quantity)
