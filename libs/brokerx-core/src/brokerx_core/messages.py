"""Versioned message bodies carried on the Redis streams (JSON in the `data` field).

Each stream entry has one field, `data`, holding `model.model_dump_json()`. Every
message names its schema version `v`; a consumer refuses versions it does not know
(the message goes to the dead-letter stream instead of crashing the consumer).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

# Decimals travel as strings so no consumer ever parses them as floats.
DecimalStr = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str)]

CommandType = Literal["new_order", "cancel", "replace", "expire"]
ExecutionEvent = Literal[
    "new",
    "partial_fill",
    "fill",
    "canceled",
    "expired",
    "replaced",
    "rejected",
    "cancel_rejected",
    "replace_rejected",
]


class StreamMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = 1


class OrderCommand(StreamMessage):
    """A command for the engine on `orders.<shard>`.

    `version` is the order version the command was issued against (for `replace`, the
    version the client matched with If-Match). `outbox_id` is the outbox row the engine
    deletes when it applies the command. A replace carries the new terms.
    """

    type: CommandType
    order_id: uuid.UUID
    symbol: str
    version: int
    correlation_id: str | None = None
    outbox_id: int | None = None
    new_quantity: int | None = None
    new_limit_price: DecimalStr | None = None
    new_time_in_force: str | None = None
    ts: datetime


class ExecutionReport(StreamMessage):
    """What happened to one order, on `executions` (owner fan-out, e-mail notifier)."""

    report_id: str  # unique per report: "<order_id>:<seq>"; consumers de-duplicate on it
    order_id: uuid.UUID
    client_order_id: str | None = None
    account_id: uuid.UUID
    client_id: uuid.UUID
    symbol: str
    side: Literal["buy", "sell"]
    event: ExecutionEvent
    status: str
    fill_price: DecimalStr | None = None
    fill_quantity: int | None = None
    trade_id: uuid.UUID | None = None
    filled_quantity: int
    leaves_quantity: int
    avg_fill_price: DecimalStr | None = None
    version: int
    reason: str | None = None
    correlation_id: str | None = None
    ts: datetime


class BookLevel(BaseModel):
    model_config = ConfigDict(frozen=True)

    price: DecimalStr
    quantity: int


class PublicTrade(BaseModel):
    model_config = ConfigDict(frozen=True)

    price: DecimalStr
    quantity: int
    ts: datetime


class MarketDataUpdate(StreamMessage):
    """Conflated state of one symbol after a batch, on `marketdata`."""

    symbol: str
    bid: DecimalStr | None = None
    bid_size: int | None = None
    ask: DecimalStr | None = None
    ask_size: int | None = None
    last: DecimalStr | None = None
    last_size: int | None = None
    bids: list[BookLevel] = Field(default_factory=list)
    asks: list[BookLevel] = Field(default_factory=list)
    trades: list[PublicTrade] = Field(default_factory=list)  # trades of this batch
    ts: datetime


def encode(message: StreamMessage) -> dict[str, str]:
    """Stream entry fields for a message."""
    return {"data": message.model_dump_json()}


def decode_command(fields: dict[bytes, bytes] | dict[str, str]) -> OrderCommand:
    """Parse an `orders.<shard>` entry; raises pydantic.ValidationError on garbage."""
    raw = fields.get(b"data") or fields.get("data")  # type: ignore[call-overload]
    return OrderCommand.model_validate_json(raw or b"")


def decode_execution(fields: dict[bytes, bytes] | dict[str, str]) -> ExecutionReport:
    """Parse an `executions` entry."""
    raw = fields.get(b"data") or fields.get("data")  # type: ignore[call-overload]
    return ExecutionReport.model_validate_json(raw or b"")
