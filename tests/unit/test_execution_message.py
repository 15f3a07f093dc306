"""The live stream renders an execution report from its stream JSON, without a pydantic
model: the message must be what rendering the validated `ExecutionReport` gives."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from brokerx_api.marketdata.schemas import display_price
from brokerx_api.stream.protocol import execution_body
from brokerx_core.messages import ExecutionReport


def _from_model(report: ExecutionReport) -> dict[str, Any]:
    """The rendering of the validated model (what the fan-out did before)."""
    return {
        "type": "execution_report",
        "report_id": report.report_id,
        "order_id": str(report.order_id),
        "client_order_id": report.client_order_id,
        "symbol": report.symbol,
        "side": report.side,
        "event": report.event,
        "status": report.status,
        "fill_price": display_price(report.fill_price),
        "fill_quantity": report.fill_quantity,
        "filled_quantity": report.filled_quantity,
        "leaves_quantity": report.leaves_quantity,
        "avg_fill_price": display_price(report.avg_fill_price),
        "trade_id": str(report.trade_id) if report.trade_id else None,
        "version": report.version,
        "reason": report.reason,
        "correlation_id": report.correlation_id,
        "ts": report.ts.isoformat().replace("+00:00", "Z"),
    }


def _report(**overrides: Any) -> ExecutionReport:
    order_id = uuid.uuid4()
    fields: dict[str, Any] = {
        "report_id": f"{order_id}:1:0:new",
        "order_id": order_id,
        "client_order_id": "c-1",
        "account_id": uuid.uuid4(),
        "client_id": uuid.uuid4(),
        "symbol": "AAPL",
        "side": "buy",
        "event": "new",
        "status": "new",
        "filled_quantity": 0,
        "leaves_quantity": 10,
        "version": 1,
        "ts": datetime(2026, 11, 24, 9, 0, 0, 123456, tzinfo=UTC),
    }
    fields.update(overrides)
    return ExecutionReport(**fields)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ts": datetime(2026, 11, 24, 9, 0, tzinfo=UTC), "client_order_id": None},
        {
            "event": "partial_fill",
            "status": "partially_filled",
            "fill_price": Decimal("190.1250"),
            "fill_quantity": 4,
            "filled_quantity": 4,
            "leaves_quantity": 6,
            "avg_fill_price": Decimal("190.1250"),
            "trade_id": uuid.uuid4(),
            "correlation_id": "corr-1",
        },
        {"event": "canceled", "status": "canceled", "reason": "ioc", "leaves_quantity": 0},
        {"fill_price": Decimal("190.0000"), "avg_fill_price": Decimal("189.5")},
    ],
)
def test_the_message_is_the_models_rendering(overrides: dict[str, Any]) -> None:
    report = _report(**overrides)
    parsed = orjson.loads(report.model_dump_json())
    assert orjson.dumps(execution_body(parsed)) == orjson.dumps(_from_model(report))


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"report_id": None}, "expected a string"),
        ({"filled_quantity": "4"}, "expected an integer"),
        ({"ts": "yesterday"}, "isoformat"),
        ({"fill_price": "abc"}, "not a decimal"),
    ],
)
def test_an_entry_that_is_not_a_report_is_refused(broken: dict[str, Any], why: str) -> None:
    parsed = orjson.loads(_report().model_dump_json()) | broken
    with pytest.raises(ValueError, match=why):
        execution_body(parsed)


def test_a_missing_field_is_refused() -> None:
    parsed = orjson.loads(_report().model_dump_json())
    del parsed["version"]
    with pytest.raises(KeyError):
        execution_body(parsed)
