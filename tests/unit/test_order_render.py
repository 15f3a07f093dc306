"""The write endpoints render orders with orjson: the bytes must be the documented model's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID

from brokerx_api.orders.schemas import OrderOut, order_json
from brokerx_core.intake import OrderRecord


def _order(**overrides: object) -> OrderRecord:
    now = datetime(2026, 11, 24, 8, 0, 0, 123456, tzinfo=UTC)
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "account_id": uuid.uuid4(),
        "client_order_id": "c-1",
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": Decimal("180.1250"),
        "time_in_force": "day",
        "status": "pending_new",
        "filled_quantity": 0,
        "avg_fill_price": None,
        "reserved_amount": Decimal("1801.2500"),
        "reserved_quantity": 0,
        "version": 1,
        "reject_reason": None,
        "request_hash": None,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return OrderRecord(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"created_at": datetime(2026, 1, 1, tzinfo=UTC), "client_order_id": None},
        {"updated_at": datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))},
        {"client_order_id": 'é"\\\u2028', "reject_reason": "insufficient_funds"},
        {"type": "market", "limit_price": None, "avg_fill_price": Decimal("180.5")},
        {"id": PgUUID(str(uuid.uuid4())), "status": "partially_filled", "filled_quantity": 4},
    ],
)
def test_order_json_is_the_models_json_byte_for_byte(overrides: dict[str, object]) -> None:
    order = _order(**overrides)
    assert order_json(order) == OrderOut.of(order).model_dump_json().encode()
