"""Cancel and replace requests: checks at the api, then a command for the engine.

The api never changes an order's execution state; it only writes the command (and, for
a replace that needs more, tops up the reservation — docs/trading.md, "Replace at the
api"). The engine applies the command and reports `canceled`/`replaced` or a rejection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.commands import PendingCommand, order_command, write_command, write_commands
from brokerx_core.db.base import utcnow
from brokerx_core.intake.errors import (
    InvalidQuantity,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotModifiable,
    VersionConflict,
)
from brokerx_core.intake.pretrade import (
    Amendment,
    InstrumentTerms,
    Reservation,
    check_limit_price,
    check_tradable,
)
from brokerx_core.intake.records import OPEN_SQL, ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import TradingRules
from brokerx_core.messages import OrderCommand
from brokerx_core.money import ZERO_CASH, cash_up

_ORDER = text(f"SELECT {ORDER_COLUMNS} FROM client_order WHERE id = :id AND account_id = :account")
_OPEN_ORDERS = text(
    "SELECT id, symbol, version FROM client_order"
    f" WHERE account_id = :account AND status IN {OPEN_SQL}"
    " AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol) ORDER BY intake_seq"
)


@dataclass(frozen=True, slots=True)
class Amended:
    """The order as persisted after the request, and the command to publish."""

    order: OrderRecord
    command: PendingCommand


def _check_version(order: OrderRecord, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != order.version:
        raise VersionConflict(
            f"the order is at version {order.version}, not {expected_version}",
            extra={"version": order.version},
        )


def cancel_command(
    order: OrderRecord | None,
    account_id: uuid.UUID,
    expected_version: int | None,
    *,
    now: datetime,
    correlation_id: str | None = None,
) -> OrderCommand:
    """The `cancel` command for `order`, or the refusal: `order_not_found` (unknown or
    another account's), `order_not_cancelable` (terminal), `version_conflict`."""
    if order is None or order.account_id != account_id:
        raise OrderNotFound("no such order")
    if not order.is_open:
        raise OrderNotCancelable(f"the order is already {order.status}")
    _check_version(order, expected_version)
    return order_command(
        "cancel", order.id, order.symbol, order.version, ts=now, correlation_id=correlation_id
    )


async def cancel_order(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    order_id: uuid.UUID,
    expected_version: int | None,
    rules: TradingRules,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> Amended:
    """Write a `cancel` command for one of the account's orders.

    `order_not_found` for an unknown or foreign order, `order_not_cancelable` when it
    is already terminal, `version_conflict` when `expected_version` is stale.
    """
    row = (await session.execute(_ORDER, {"id": order_id, "account": account_id})).first()
    order = OrderRecord.from_row(row) if row is not None else None
    command = cancel_command(
        order, account_id, expected_version, now=now or utcnow(), correlation_id=correlation_id
    )
    assert order is not None
    return Amended(order, await write_command(session, command, shards=rules.shards))


async def cancel_all(
    session: AsyncSession,
    *,
    account_id: uuid.UUID,
    rules: TradingRules,
    symbol: str | None = None,
    correlation_id: str | None = None,
    now: datetime | None = None,
) -> list[PendingCommand]:
    """Write a `cancel` command for every open order of the account (optionally one symbol)."""
    ts = now or utcnow()
    rows = (await session.execute(_OPEN_ORDERS, {"account": account_id, "symbol": symbol})).all()
    commands = [
        order_command("cancel", r.id, r.symbol, r.version, ts=ts, correlation_id=correlation_id)
        for r in rows
    ]
    return await write_commands(session, commands, shards=rules.shards)


@dataclass(frozen=True, slots=True)
class ReplacePlan:
    """A replace that passed its checks: the new terms and what must be reserved on top."""

    quantity: int
    limit_price: Decimal
    time_in_force: str
    extra_cash: Decimal
    extra_shares: int

    @property
    def reservation(self) -> Reservation:
        return Reservation(self.extra_cash, self.extra_shares, None)


def plan_replace(
    order: OrderRecord,
    instrument: InstrumentTerms,
    amendment: Amendment,
    rules: TradingRules,
    expected_version: int,
    now: datetime,
) -> ReplacePlan:
    """Check a replace against the order as read; what the new terms need reserved beyond
    what the order holds (never less: the engine releases the difference when it applies
    the replace). Raises the refusal (`order_not_modifiable`, `version_conflict`, ...)."""
    if not order.is_open:
        raise OrderNotModifiable(f"the order is already {order.status}")
    if order.type != "limit" or order.limit_price is None:
        raise OrderNotModifiable("only limit orders can be modified")
    _check_version(order, expected_version)
    check_tradable(instrument, rules, now)
    quantity = amendment.quantity if amendment.quantity is not None else order.quantity
    if quantity <= order.filled_quantity:
        raise InvalidQuantity(
            f"quantity must exceed the {order.filled_quantity} shares already filled"
        )
    limit_price = amendment.limit_price if amendment.limit_price is not None else order.limit_price
    check_limit_price(limit_price, instrument, rules)
    leaves = quantity - order.filled_quantity
    extra_cash = ZERO_CASH
    extra_shares = 0
    if order.side == "buy":
        extra_cash = max(cash_up(leaves * limit_price) - order.reserved_amount, ZERO_CASH)
    else:
        extra_shares = max(leaves - order.reserved_quantity, 0)
    return ReplacePlan(
        quantity,
        limit_price,
        amendment.time_in_force or order.time_in_force,
        extra_cash,
        extra_shares,
    )


def replace_command(
    order: OrderRecord,
    plan: ReplacePlan,
    expected_version: int,
    *,
    now: datetime,
    correlation_id: str | None,
) -> OrderCommand:
    """The `replace` command of a planned replace."""
    return order_command(
        "replace",
        order.id,
        order.symbol,
        expected_version,
        ts=now,
        correlation_id=correlation_id,
        new_quantity=plan.quantity,
        new_limit_price=plan.limit_price,
        new_time_in_force=plan.time_in_force,
    )


def instrument_of(m: Any) -> InstrumentTerms:
    """The instrument terms of a row mapping (an asyncpg record, a row's `_mapping`) that
    selected `i.tick_size, i.reference_price, i.last_price, i.status AS instrument_status`
    next to the order's columns."""
    return InstrumentTerms(
        m["symbol"], m["tick_size"], m["reference_price"], m["last_price"], m["instrument_status"]
    )
