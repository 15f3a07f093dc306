"""HTTP status of every intake refusal: the one place where order errors meet HTTP."""

from __future__ import annotations

from brokerx_api.errors import DomainError
from brokerx_core.intake import IntakeError


class OrderValidationFailed(DomainError):
    status, code, title = 422, "validation_error", "Invalid request"


class UnknownSymbol(DomainError):
    status, code, title = 422, "unknown_symbol", "Unknown symbol"


class InvalidQuantity(DomainError):
    status, code, title = 422, "invalid_quantity", "Invalid quantity"


class InvalidPrice(DomainError):
    status, code, title = 422, "invalid_price", "Invalid price"


class InvalidTick(DomainError):
    status, code, title = 422, "invalid_tick", "Price not on the tick grid"


class PriceOutOfBand(DomainError):
    status, code, title = 422, "price_out_of_band", "Price outside the allowed band"


class InsufficientFunds(DomainError):
    status, code, title = 422, "insufficient_funds", "Insufficient buying power"


class InsufficientPosition(DomainError):
    status, code, title = 422, "insufficient_position", "Insufficient shares"


class TooManyOpenOrders(DomainError):
    status, code, title = 422, "too_many_open_orders", "Too many open orders"


class MarketClosed(DomainError):
    status, code, title = 422, "market_closed", "Market closed"


class ClientOrderIdReused(DomainError):
    status, code, title = 409, "client_order_id_reused", "client_order_id already used"


class OrderNotFound(DomainError):
    status, code, title = 404, "order_not_found", "Order not found"


class VersionConflict(DomainError):
    status, code, title = 409, "version_conflict", "Order version changed"


class OrderNotModifiable(DomainError):
    status, code, title = 422, "order_not_modifiable", "Order cannot be modified"


class OrderNotCancelable(DomainError):
    status, code, title = 422, "order_not_cancelable", "Order cannot be canceled"


class PreconditionRequired(DomainError):
    status, code, title = 428, "precondition_required", "If-Match header required"


_BY_CODE: dict[str, type[DomainError]] = {
    cls.code: cls
    for cls in (
        OrderValidationFailed,
        UnknownSymbol,
        InvalidQuantity,
        InvalidPrice,
        InvalidTick,
        PriceOutOfBand,
        InsufficientFunds,
        InsufficientPosition,
        TooManyOpenOrders,
        MarketClosed,
        ClientOrderIdReused,
        OrderNotFound,
        VersionConflict,
        OrderNotModifiable,
        OrderNotCancelable,
    )
}


def http_error(exc: IntakeError) -> DomainError:
    """The problem+json error answering an intake refusal (same code, detail and extras)."""
    return _BY_CODE[exc.code](exc.detail, extra=exc.extra)
