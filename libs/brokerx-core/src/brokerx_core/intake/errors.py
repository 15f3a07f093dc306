"""Why intake refuses a request. Each error carries the stable `code` of API.md.

These are plain exceptions (the core knows nothing of HTTP); the api maps each `code`
to its status in one place (`brokerx_api.orders.errors`). The market maker logs them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from brokerx_core.money import fmt


class IntakeError(Exception):
    """A request refused before anything was written (or with everything rolled back)."""

    code: ClassVar[str] = "intake_error"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}


class RequestInvalid(IntakeError):
    """Malformed body: missing field, wrong type, unknown enum value."""

    code = "validation_error"

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        super().__init__(f"{where}: {first['msg']}" if where else str(first["msg"]))
        self.extra = {"errors": errors}


class UnknownSymbol(IntakeError):
    code = "unknown_symbol"


class InvalidQuantity(IntakeError):
    code = "invalid_quantity"


class InvalidPrice(IntakeError):
    code = "invalid_price"


class InvalidTick(IntakeError):
    code = "invalid_tick"


class PriceOutOfBand(IntakeError):
    code = "price_out_of_band"


class InsufficientFunds(IntakeError):
    code = "insufficient_funds"

    @classmethod
    def of(cls, required: Decimal, available: Decimal) -> InsufficientFunds:
        """The refusal of a reservation of `required` cash when `available` is left."""
        return cls(
            f"this order needs {fmt(required)} of buying power; {fmt(available)} is available",
            extra={"required": fmt(required), "available": fmt(available)},
        )


class InsufficientPosition(IntakeError):
    code = "insufficient_position"

    @classmethod
    def of(cls, required: int, symbol: str, available: int) -> InsufficientPosition:
        """The refusal of a reservation of `required` shares when `available` are left."""
        return cls(
            f"this order sells {required} {symbol}; {available} are available (no short selling)",
            extra={"required": required, "available": available},
        )


class TooManyOpenOrders(IntakeError):
    code = "too_many_open_orders"


class MarketClosed(IntakeError):
    code = "market_closed"


class ClientOrderIdReused(IntakeError):
    code = "client_order_id_reused"


class OrderNotFound(IntakeError):
    code = "order_not_found"


class VersionConflict(IntakeError):
    code = "version_conflict"


class OrderNotModifiable(IntakeError):
    code = "order_not_modifiable"


class OrderNotCancelable(IntakeError):
    code = "order_not_cancelable"
