"""Order requests of one client: run intake, commit, then publish the command (fast path).

Intake itself (checks, reservation, rows) is `brokerx_core.intake`, shared with the
market maker. This layer adds what is HTTP's: decoding bodies without float, error
mapping, metrics, and committing before the XADD so the engine never sees a command
whose order is not yet visible.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal, InvalidOperation

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_api.orders.errors import (
    OrderNotFound,
    OrderValidationFailed,
    PreconditionRequired,
    http_error,
)
from brokerx_api.orders.metrics import ORDERS_REJECTED, received
from brokerx_api.settings import ApiSettings
from brokerx_core import intake
from brokerx_core.commands import publish_commands
from brokerx_core.intake import (
    IntakeError,
    OrderRecord,
    Placement,
    RequestInvalid,
    TradingRules,
)
from brokerx_core.intake.batcher import IntakeBatcher
from brokerx_core.intake.cancels import CancelRequest
from brokerx_core.intake.replaces import ReplaceRequest

_RULES: dict[int, tuple[ApiSettings, TradingRules]] = {}
# A version is a small integer: a longer If-Match names none (and int() of 4,300 digits
# or more raises).
MAX_VERSION_DIGITS = 18


def trading_rules(settings: ApiSettings) -> TradingRules:
    """The rules of these settings, parsed once per settings object."""
    cached = _RULES.get(id(settings))
    if cached is None or cached[0] is not settings:
        cached = (settings, TradingRules.from_settings(settings))
        _RULES[id(settings)] = cached
    return cached[1]


def _json_decimal(text: str) -> Decimal:
    # `1e9999999999999999999` is beyond Decimal: NaN, which the field's own check refuses
    # (invalid_price, invalid_quantity) as it refuses any other number it cannot take.
    try:
        return Decimal(text)
    except InvalidOperation:
        return Decimal("NaN")


def _json_int(text: str) -> int | Decimal:
    # Past Python's int-parsing digit limit (ValueError), a Decimal: still a number, so
    # the field's check answers (a price too large, a quantity not a share count).
    try:
        return int(text)
    except ValueError:
        return Decimal(text)


def decode_body(raw: bytes) -> object:
    """JSON with every number that has a fraction or exponent decoded as Decimal (and an
    integer too long for int(): a number no field takes, never an error of its own)."""
    try:
        return json.loads(raw, parse_float=_json_decimal, parse_int=_json_int)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # `[[[…` too deep
        raise RequestInvalid([{"loc": [], "msg": "the body must be valid JSON"}]) from exc


def parse_if_match(value: str | None, *, required: bool) -> int | None:
    """The order version of an `If-Match` header: `3` or `"3"` (428 when required and absent)."""
    if value is None or not value.strip():
        if required:
            raise PreconditionRequired("send If-Match with the order version you last saw")
        return None
    candidate = value.strip()
    if len(candidate) >= 2 and candidate[0] == candidate[-1] == '"':
        candidate = candidate[1:-1]
    if not (candidate.isascii() and candidate.isdigit()) or len(candidate) > MAX_VERSION_DIGITS:
        raise OrderValidationFailed(
            "If-Match: must be the order version (an integer, bare or quoted)",
            extra={"errors": [{"loc": ["If-Match"], "msg": "not an order version"}]},
        )
    return int(candidate)


def parse_order_id(value: str) -> uuid.UUID | None:
    """The order id of a path, or None when it is not a UUID (answered 404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _existing_order_id(value: str) -> uuid.UUID:
    """The path's order id; a value that is not a UUID names no order: 404, before the
    If-Match and the body are looked at (API.md lists 404 for the order's routes)."""
    parsed = parse_order_id(value)
    if parsed is None:
        raise OrderNotFound("no such order")
    return parsed


async def submit_order(
    batcher: IntakeBatcher,
    *,
    account_id: uuid.UUID,
    raw_body: bytes,
    idempotency_key: str | None,
    correlation_id: str,
) -> Placement:
    """Intake of POST /orders: the placement (a replay when `placement.replayed`).

    The batcher commits the order with the other requests of its group and publishes
    the command before answering.
    """
    try:
        order = intake.parse_new_order(decode_body(raw_body), idempotency_key=idempotency_key)
    except IntakeError as exc:
        ORDERS_REJECTED.labels(reason=exc.code).inc()
        raise http_error(exc) from exc
    received(order.side, order.type).inc()
    try:
        return await batcher.place(account_id, order, correlation_id=correlation_id)
    except IntakeError as exc:
        ORDERS_REJECTED.labels(reason=exc.code).inc()
        raise http_error(exc) from exc


async def amend_order(
    batcher: IntakeBatcher,
    *,
    account_id: uuid.UUID,
    order_id: str,
    if_match: str | None,
    raw_body: bytes,
    correlation_id: str,
) -> OrderRecord:
    """PATCH /orders/{id}: the replace written (group commit, `replaces.replace_orders`)
    and published; the order as persisted."""
    parsed_id = _existing_order_id(order_id)
    expected_version = parse_if_match(if_match, required=True)
    assert expected_version is not None
    try:
        amendment = intake.parse_amendment(decode_body(raw_body))
        request = ReplaceRequest(account_id, parsed_id, expected_version, amendment, correlation_id)
        amended = await batcher.replace(request)
    except IntakeError as exc:
        raise http_error(exc) from exc
    return amended.order


async def cancel_order(
    batcher: IntakeBatcher,
    *,
    account_id: uuid.UUID,
    order_id: str,
    if_match: str | None,
    correlation_id: str,
) -> OrderRecord:
    """DELETE /orders/{id}: the cancel request written (group commit); the order as read."""
    parsed_id = _existing_order_id(order_id)
    expected_version = parse_if_match(if_match, required=False)
    try:
        amended = await batcher.cancel(
            CancelRequest(account_id, parsed_id, expected_version, correlation_id)
        )
    except IntakeError as exc:
        raise http_error(exc) from exc
    return amended.order


async def cancel_all_orders(
    session: AsyncSession,
    redis: Redis,
    settings: ApiSettings,
    *,
    account_id: uuid.UUID,
    symbol: str | None,
    correlation_id: str,
) -> int:
    """DELETE /orders: a cancel for every open order; how many were requested."""
    pending = await intake.cancel_all(
        session,
        account_id=account_id,
        rules=trading_rules(settings),
        symbol=symbol,
        correlation_id=correlation_id,
    )
    if pending:
        await session.commit()
        await publish_commands(redis, pending)
    return len(pending)
