"""The live-stream wire format (API.md, "Live stream"): client actions in, server messages out.

Every server message is serialized once and the same text is queued to every recipient,
so fan-out cost does not grow with the message size.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from brokerx_api.marketdata.schemas import display_price
from brokerx_core.messages import MarketDataUpdate

# A client never needs more than a few hundred bytes per action.
MAX_CLIENT_MESSAGE_BYTES = 16 * 1024
MAX_SYMBOLS_PER_LIST = 100


class ProtocolError(Exception):
    """A client message we answer with `{"type":"error"}` (the connection stays open)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class AuthAction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["auth"]
    token: str = Field(min_length=1, max_length=4096)


class SubscriptionAction(BaseModel):
    """`subscribe` / `unsubscribe`: symbol lists per channel and the client's own orders."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["subscribe", "unsubscribe"]
    quotes: list[str] = Field(default_factory=list, max_length=MAX_SYMBOLS_PER_LIST)
    books: list[str] = Field(default_factory=list, max_length=MAX_SYMBOLS_PER_LIST)
    trades: list[str] = Field(default_factory=list, max_length=MAX_SYMBOLS_PER_LIST)
    orders: StrictBool = False

    def symbols(self) -> set[str]:
        """Every symbol named in the action, upper-cased."""
        return {s.strip().upper() for s in (*self.quotes, *self.books, *self.trades)}


class PingAction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action: Literal["ping"]


ClientAction = AuthAction | SubscriptionAction | PingAction
_ACTIONS: dict[str, type[BaseModel]] = {
    "auth": AuthAction,
    "subscribe": SubscriptionAction,
    "unsubscribe": SubscriptionAction,
    "ping": PingAction,
}


def parse_action(text: str | None) -> ClientAction:
    """Parse one client frame; raise `ProtocolError` with a stable code when it is bad."""
    if text is None:
        raise ProtocolError("invalid_message", "Messages must be JSON text frames")
    if len(text) > MAX_CLIENT_MESSAGE_BYTES:
        raise ProtocolError(
            "message_too_large", f"Messages are limited to {MAX_CLIENT_MESSAGE_BYTES} bytes"
        )
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: `[[[…` too deep
        raise ProtocolError("invalid_json", "Message is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError("invalid_message", "Message must be a JSON object")
    action = body.get("action")
    model = _ACTIONS.get(action) if isinstance(action, str) else None
    if model is None:
        raise ProtocolError(
            "unknown_action",
            f"Unknown action {str(action)[:40]!r}; expected one of {sorted(_ACTIONS)}",
        )
    try:
        return model.model_validate(body)  # type: ignore[return-value]
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise ProtocolError("invalid_message", f"{where}: {first.get('msg', 'invalid')}") from exc


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON text of a server message (orjson: the fan-out renders every report)."""
    return orjson.dumps(message).decode()


def error_message(code: str, detail: str) -> str:
    return dumps({"type": "error", "code": code, "detail": detail})


def status_message(level: Literal["ok", "degraded"], reason: str | None) -> str:
    body: dict[str, Any] = {"type": "status", "level": level}
    if reason is not None:
        body["reason"] = reason
    return dumps(body)


def subscription_message(
    kind: Literal["subscribed", "unsubscribed"],
    quotes: set[str],
    books: set[str],
    trades: set[str],
    orders: bool,
) -> str:
    """The connection's whole subscription state after a subscribe/unsubscribe."""
    return dumps(
        {
            "type": kind,
            "quotes": sorted(quotes),
            "books": sorted(books),
            "trades": sorted(trades),
            "orders": orders,
        }
    )


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def quote_body(update: MarketDataUpdate) -> dict[str, Any]:
    return {
        "type": "quote",
        "symbol": update.symbol,
        "bid": display_price(update.bid),
        "bid_size": update.bid_size,
        "ask": display_price(update.ask),
        "ask_size": update.ask_size,
        "last": display_price(update.last),
        "last_size": update.last_size,
        "ts": _ts(update.ts),
    }


def book_body(update: MarketDataUpdate) -> dict[str, Any]:
    return {
        "type": "book",
        "symbol": update.symbol,
        "bids": [[display_price(level.price), level.quantity] for level in update.bids],
        "asks": [[display_price(level.price), level.quantity] for level in update.asks],
        "ts": _ts(update.ts),
    }


def trade_bodies(update: MarketDataUpdate) -> list[dict[str, Any]]:
    return [
        {
            "type": "trade",
            "symbol": update.symbol,
            "price": display_price(trade.price),
            "quantity": trade.quantity,
            "ts": _ts(trade.ts),
        }
        for trade in update.trades
    ]


def execution_body(report: dict[str, Any]) -> dict[str, Any]:
    """What the owner sees of a report: API.md's fields plus a few that help a client
    reconcile (report_id to de-duplicate, symbol/side, version, average price, trade id).

    Built from the report's stream JSON as parsed (`ExecutionReport`'s fields: ids and
    times as strings, prices as decimal strings) without a pydantic model: the fan-out
    renders every report a client is subscribed to. Raises KeyError or ValueError on an
    entry that is not a report.
    """
    return {
        "type": "execution_report",
        "report_id": _text(report["report_id"]),
        "order_id": _text(report["order_id"]),
        "client_order_id": report.get("client_order_id"),
        "symbol": _text(report["symbol"]),
        "side": _text(report["side"]),
        "event": _text(report["event"]),
        "status": _text(report["status"]),
        "fill_price": display_price(report.get("fill_price")),
        "fill_quantity": report.get("fill_quantity"),
        "filled_quantity": _int(report["filled_quantity"]),
        "leaves_quantity": _int(report["leaves_quantity"]),
        "avg_fill_price": display_price(report.get("avg_fill_price")),
        "trade_id": report.get("trade_id"),
        "version": _int(report["version"]),
        "reason": report.get("reason"),
        "correlation_id": report.get("correlation_id"),
        "ts": _ts_text(report["ts"]),
    }


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    return value


def _ts_text(value: Any) -> str:
    """A report time as `_ts` renders it (UTC with `Z`), from its JSON form."""
    text = _text(value)
    datetime.fromisoformat(text)  # refuse what is not a time
    return text[:-6] + "Z" if text.endswith("+00:00") else text


AUTHENTICATED = dumps({"type": "authenticated"})
PONG = dumps({"type": "pong"})
