"""Request parsing and response models of the accounts domain.

Money leaves the api as JSON strings: cash with exactly 2 decimals, prices with at
least 2 and at most the digits they carry. The deposit body is decoded from the raw
bytes with JSON numbers parsed as `Decimal`, so `0.1` is 0.1 and never a float.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

from brokerx_api.accounts.errors import InvalidAmount, UnsupportedCurrency
from brokerx_api.errors import ValidationFailed
from brokerx_core.money import CENT, cash, decimal_places, fmt, to_decimal

SUPPORTED_CURRENCY = "USD"


def cash_text(value: Decimal) -> str:
    """A cash amount as a string with exactly two decimals."""
    return format(cash(value), "f")


def price_text(value: Decimal) -> str:
    """A price as a string: cents at least, more digits only when it carries them."""
    if decimal_places(value) <= 2:
        return format(value.quantize(CENT), "f")
    return fmt(value.normalize()) or ""


CashText = Annotated[
    Decimal,
    PlainSerializer(cash_text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?\d+\.\d{2}$", "examples": ["1000.00"]}),
]
PriceText = Annotated[
    Decimal,
    PlainSerializer(price_text, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["190.25"]}),
]


# --- requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepositRequest:
    """A parsed deposit body: the exact amount (not yet range-checked) and currency."""

    amount: Decimal
    currency: str

    def canonical(self) -> dict[str, str]:
        """What the request means, for idempotency fingerprints (`100` ≡ `"100.00"`)."""
        return {"amount": cash_text(self.amount), "currency": self.currency}


DEPOSIT_REQUEST_SCHEMA: dict[str, Any] = {
    "title": "DepositRequest",
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": "Decimal amount, > 0, at most 2 decimals, at most 1000000.00.",
            "examples": ["250.00"],
        },
        "currency": {
            "type": "string",
            "enum": [SUPPORTED_CURRENCY],
            "default": SUPPORTED_CURRENCY,
            "description": "Only USD is supported (anything else: 422 `unsupported_currency`).",
        },
    },
}


def _invalid_body(message: str, loc: list[str]) -> ValidationFailed:
    return ValidationFailed(
        f"{'.'.join(loc)}: {message}", extra={"errors": [{"loc": loc, "msg": message}]}
    )


def _json_decimal(text: str) -> Decimal:
    # `1e9999999999999999999` is beyond Decimal: NaN, which the amount check refuses
    # (invalid_amount) as it refuses any other number it cannot take.
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal("NaN")


def parse_deposit_request(raw: bytes) -> DepositRequest:
    """Decode a deposit body; 422 `validation_error`, `invalid_amount` or
    `unsupported_currency` when it is not one."""
    try:
        # parse_int too: a 5000-digit integer is an invalid amount, not a parser crash.
        body = json.loads(raw, parse_float=_json_decimal, parse_int=Decimal) if raw else None
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8, `[[[…` nested too deep
        raise _invalid_body("invalid JSON", ["body"]) from exc
    if not isinstance(body, dict):
        raise _invalid_body("a JSON object is expected", ["body"])
    value = body.get("amount")
    if value is None:
        raise _invalid_body("field required", ["amount"])
    # Decimal() also reads "1_000" and " 7 "; an amount is a plain decimal number.
    if isinstance(value, str) and ("_" in value or value != value.strip()):
        raise InvalidAmount('amount must be a decimal number such as "100.00"')
    try:
        amount = to_decimal(value)
    except ValueError as exc:
        raise InvalidAmount('amount must be a decimal number such as "100.00"') from exc
    currency = body.get("currency")
    if currency is None:
        currency = SUPPORTED_CURRENCY
    if not isinstance(currency, str) or currency.upper() != SUPPORTED_CURRENCY:
        raise UnsupportedCurrency(f"currency must be {SUPPORTED_CURRENCY}")
    return DepositRequest(amount=amount, currency=SUPPORTED_CURRENCY)


# --- responses -------------------------------------------------------------------


class DepositOut(BaseModel):
    id: uuid.UUID
    amount: CashText
    currency: str = Field(examples=[SUPPORTED_CURRENCY])
    status: str = Field(examples=["settled"])
    balance_after: CashText = Field(description="Cash of the account right after it.")
    created_at: datetime


class LedgerEntryOut(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="`deposit`, `buy` or `sell`.", examples=["deposit"])
    amount: CashText = Field(description="Signed: credits positive, debits negative.")
    balance_after: CashText
    reference_id: uuid.UUID = Field(description="The deposit or trade that moved the cash.")
    created_at: datetime


class AccountOut(BaseModel):
    id: uuid.UUID
    currency: str = Field(examples=[SUPPORTED_CURRENCY])
    cash: CashText
    reserved_cash: CashText = Field(description="Cash held for open buy orders.")
    buying_power: CashText = Field(description="cash − reserved_cash.")
    positions_value: CashText = Field(description="Σ market_value of the positions.")
    equity: CashText = Field(description="cash + positions_value.")


class PositionOut(BaseModel):
    symbol: str
    quantity: int
    reserved_quantity: int = Field(description="Shares held for open sell orders.")
    available_quantity: int = Field(description="quantity − reserved_quantity.")
    avg_cost: PriceText
    last_price: PriceText = Field(
        description="Last trade price, or the reference price before the first trade."
    )
    market_value: CashText = Field(description="quantity × last_price.")
    unrealized_pl: CashText = Field(description="(last_price − avg_cost) × quantity.")


class PositionsOut(BaseModel):
    items: list[PositionOut]
