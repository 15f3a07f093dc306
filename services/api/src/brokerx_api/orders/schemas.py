"""Request and response bodies of the orders endpoints (API.md, "Orders")."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from brokerx_api.pagination import Page
from brokerx_core.intake import OrderRecord
from brokerx_core.money import CENT, fmt

# --- requests (documentation only: bodies are decoded without float, see endpoints) ---


class OrderRequest(BaseModel):
    """A new order. Prices may be JSON strings or numbers; they never pass through float."""

    symbol: str = Field(examples=["AAPL"], max_length=12)
    side: Literal["buy", "sell"]
    type: Literal["market", "limit"]
    quantity: int = Field(gt=0, le=1_000_000, examples=[100])
    limit_price: str | None = Field(
        default=None,
        description="Required for limit orders, absent for market orders.",
        examples=["190.25"],
    )
    time_in_force: Literal["day", "gtc", "ioc", "fok"] = "day"
    client_order_id: str | None = Field(
        default=None,
        max_length=64,
        description="Unique per account; the same id with the same body replays the order. "
        "The `Idempotency-Key` header is accepted as the same thing.",
    )


class AmendRequest(BaseModel):
    """New terms of a resting limit order; omitted fields keep their value."""

    quantity: int | None = Field(default=None, gt=0, description="New total quantity.")
    limit_price: str | None = Field(default=None, examples=["190.30"])
    time_in_force: Literal["day", "gtc"] | None = None


def request_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for an endpoint that decodes its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


# --- responses ----------------------------------------------------------------------


def price_text(value: Decimal | None) -> str | None:
    """A stored price as a string: cents at least, more digits only when it has them."""
    if value is None:
        return None
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        normalized = value.quantize(CENT)
    return fmt(normalized)


class OrderOut(BaseModel):
    id: uuid.UUID
    client_order_id: str | None
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit"]
    quantity: int
    limit_price: str | None
    time_in_force: str
    status: str
    filled_quantity: int
    leaves_quantity: int
    avg_fill_price: str | None
    reserved_amount: str
    reserved_quantity: int = Field(description="Shares held for a sell order.")
    version: int
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: OrderRecord) -> OrderOut:
        return cls(**order_fields(order))


def order_fields(order: OrderRecord) -> dict[str, Any]:
    """`OrderOut`'s fields of an order, as Python values (the one mapping of the two)."""
    return {
        "id": str(order.id),  # asyncpg hands back its own UUID type
        "client_order_id": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "quantity": order.quantity,
        "limit_price": price_text(order.limit_price),
        "time_in_force": order.time_in_force,
        "status": order.status,
        "filled_quantity": order.filled_quantity,
        "leaves_quantity": order.leaves_quantity,
        "avg_fill_price": price_text(order.avg_fill_price),
        "reserved_amount": fmt(order.reserved_amount.quantize(CENT)) or "0.00",
        "reserved_quantity": order.reserved_quantity,
        "version": order.version,
        "reject_reason": order.reject_reason,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def order_json(order: OrderRecord) -> bytes:
    """The JSON of `OrderOut.of(order)`, byte for byte, without a pydantic model: the
    write endpoints answer with it directly (FastAPI then skips validating and
    re-encoding the response, a tenth of their CPU)."""
    return orjson.dumps(order_fields(order), option=orjson.OPT_UTC_Z)


class FillOut(BaseModel):
    trade_id: uuid.UUID
    price: str
    quantity: int
    ts: datetime


class OrderDetailOut(OrderOut):
    fills: list[FillOut]


class TradeOut(BaseModel):
    trade_id: uuid.UUID
    order_id: uuid.UUID
    symbol: str
    side: Literal["buy", "sell"]
    price: str
    quantity: int
    ts: datetime


OrderPage = Page[OrderOut]
TradePage = Page[TradeOut]


class CancelAllOut(BaseModel):
    requested: int = Field(description="Open orders a cancel was requested for.")
