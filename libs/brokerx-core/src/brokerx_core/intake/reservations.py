"""Top up a reservation when a replace needs more cash or shares (`amend.replace_order`).

New orders reserve inside `intake_place_orders` (migration 0003) with the same guarded
UPDATEs: the reservation grows only when the account or position can cover it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.intake.errors import InsufficientFunds, InsufficientPosition
from brokerx_core.intake.pretrade import Reservation
from brokerx_core.money import ZERO_CASH, fmt

_RESERVE_CASH = text(
    "UPDATE account SET reserved_cash = reserved_cash + :amount, updated_at = now()"
    " WHERE id = :account AND cash - reserved_cash >= :amount"
)
_RESERVE_SHARES = text(
    "UPDATE position SET reserved_quantity = reserved_quantity + :quantity, updated_at = now()"
    " WHERE account_id = :account AND symbol = :symbol"
    " AND quantity - reserved_quantity >= :quantity"
)
_AVAILABLE_CASH = text("SELECT cash - reserved_cash FROM account WHERE id = :account")
_AVAILABLE_SHARES = text(
    "SELECT quantity - reserved_quantity FROM position"
    " WHERE account_id = :account AND symbol = :symbol"
)


async def reserve(
    session: AsyncSession,
    account_id: uuid.UUID,
    side: str,
    symbol: str,
    reservation: Reservation,
) -> None:
    """Add a reservation to the account (cash) or position (shares), or raise
    `insufficient_funds` / `insufficient_position` without changing anything."""
    if side == "buy":
        if reservation.cash <= 0:
            return
        params = {"account": account_id, "amount": reservation.cash}
        result = await session.execute(_RESERVE_CASH, params)
        if result.rowcount == 0:  # type: ignore[attr-defined]
            available = (await session.execute(_AVAILABLE_CASH, params)).scalar() or ZERO_CASH
            raise insufficient_funds(reservation.cash, available)
        return
    if reservation.shares <= 0:
        return
    params = {"account": account_id, "symbol": symbol, "quantity": reservation.shares}
    result = await session.execute(_RESERVE_SHARES, params)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        available = (await session.execute(_AVAILABLE_SHARES, params)).scalar() or 0
        raise insufficient_position(reservation.shares, symbol, int(available))


def insufficient_funds(required: Decimal, available: Decimal) -> InsufficientFunds:
    """The refusal of a reservation of `required` cash when `available` is left."""
    return InsufficientFunds(
        f"this order needs {fmt(required)} of buying power; {fmt(available)} is available",
        extra={"required": fmt(required), "available": fmt(available)},
    )


def insufficient_position(required: int, symbol: str, available: int) -> InsufficientPosition:
    """The refusal of a reservation of `required` shares when `available` are left."""
    return InsufficientPosition(
        f"this order sells {required} {symbol}; {available} are available (no short selling)",
        extra={"required": required, "available": available},
    )
