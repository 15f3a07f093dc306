"""Pure parts of the engine: reservation arithmetic, reports, and the engine on its
own (no database: rows are built in memory)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from asyncpg.pgproto.pgproto import UUID as PgUUID
from hypothesis import given
from hypothesis import strategies as st

from brokerx_core.messages import ExecutionReport, MarketDataUpdate, OrderCommand
from brokerx_matching.engine import MatchingEngine
from brokerx_matching.marketdata import batch_updates
from brokerx_matching.poison import bury
from brokerx_matching.reports import execution_report, report_json
from brokerx_matching.state import InstrumentState, OrderState, ReservationOp

TS = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("consume"), st.integers(0, 500)),
        st.tuples(st.just("cap"), st.integers(0, 2_000)),
    ),
    max_size=12,
)


@given(start=st.integers(0, 2_000), ops=operations)
def test_reservation_ops_compose_like_applying_them_one_by_one(
    start: int, ops: list[tuple[str, int]]
) -> None:
    """What the batch writes in one SQL expression equals applying each fill and each
    replace to the row in turn (consumption never goes below zero)."""
    composed = ReservationOp()
    value = start
    for kind, amount in ops:
        if kind == "consume":
            composed.consume(amount)
            value = max(value - amount, 0)
        else:
            composed.cap(amount)
            value = min(value, amount)
    assert composed.apply_to(start) == value


def order(**overrides: object) -> OrderState:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "account_id": uuid.uuid4(),
        "client_id": uuid.uuid4(),
        "client_order_id": "mine-1",
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "quantity": 10,
        "limit_price": Decimal("190.00"),
        "time_in_force": "day",
        "status": "pending_new",
        "filled_quantity": 0,
        "fill_notional": Decimal(0),
        "version": 1,
        "reservation_price": None,
        "priority_seq": None,
        "created_at": TS,
        "correlation_id": "corr-1",
        "reject_reason": None,
    }
    values.update(overrides)
    return OrderState(**values)  # type: ignore[arg-type]


def test_report_json_is_an_execution_report() -> None:
    state = order(status="partially_filled", filled_quantity=4, fill_notional=Decimal("760.0000"))
    trade_id = uuid.uuid4()
    raw = report_json(
        execution_report(
            state,
            "partial_fill",
            TS,
            fill_price=Decimal("190.0000"),
            fill_quantity=4,
            trade_id=trade_id,
        )
    )
    report = ExecutionReport.model_validate_json(raw)
    assert report.report_id == f"{state.id}:1:4:partial_fill"
    assert (report.fill_price, report.fill_quantity, report.trade_id) == (
        Decimal("190.0000"),
        4,
        trade_id,
    )
    assert (report.filled_quantity, report.leaves_quantity) == (4, 6)
    assert report.avg_fill_price == Decimal("190")
    assert (report.client_order_id, report.correlation_id, report.ts) == ("mine-1", "corr-1", TS)
    # The same JSON the pydantic model would write (consumers may compare raw bodies).
    assert raw == report.model_dump_json().encode()
    # Ids read by asyncpg are its own UUID type; a whole second has no fraction.
    state.account_id = PgUUID(str(state.account_id))
    whole_second = TS.replace(microsecond=0)
    raw = report_json(execution_report(state, "new", whole_second, reason='a "quoted" é'))
    assert raw == ExecutionReport.model_validate_json(raw).model_dump_json().encode()


def engine() -> MatchingEngine:
    return MatchingEngine(
        [InstrumentState("AAPL", Decimal("0.01"), Decimal("190.00"), "active")],
        market_collar_pct=Decimal("5"),
    )


def command(state: OrderState, type_: str = "new_order", **extra: object) -> OrderCommand:
    return OrderCommand(
        type=type_, order_id=state.id, symbol=state.symbol, version=1, ts=TS, **extra
    )  # type: ignore[arg-type]


def test_engine_trades_and_tracks_reservations_without_io() -> None:
    eng = engine()
    sell = order(side="sell", limit_price=Decimal("189.00"), quantity=5)
    buy = order(limit_price=Decimal("190.50"))
    batch = eng.apply([command(sell), command(buy)], {sell.id: sell, buy.id: buy}, TS)
    [trade] = batch.trades
    assert (trade.price, trade.quantity, trade.notional) == (
        Decimal("189.0000"),
        5,
        Decimal("945.00"),
    )
    assert (sell.status, buy.status, buy.filled_quantity) == ("filled", "partially_filled", 5)
    # The buyer's reservation is consumed at its limit; the sell's by the shares.
    assert buy.cash_op is not None
    assert buy.cash_op.apply_to(Decimal("1905.00")) == Decimal("952.50")
    assert sell.qty_op is not None
    assert sell.qty_op.apply_to(5) == 0
    assert [r["event"] for r in batch.reports] == ["new", "new", "partial_fill", "fill"]
    assert eng.knows(buy.id)
    assert not eng.knows(sell.id)
    assert batch.symbols == {"AAPL"}


def test_new_order_of_an_order_no_longer_pending_is_skipped() -> None:
    eng = engine()
    done = order(status="canceled")
    batch = eng.apply([command(done, outbox_id=7)], {done.id: done}, TS)
    assert batch.outcomes == [("new_order", "skipped")]
    assert batch.outbox_ids == [7]  # its row goes anyway
    assert batch.reports == []


def test_bury_rejects_a_pending_order_and_answers_a_cancel() -> None:
    pending = order()
    batch = bury(command(pending, outbox_id=3), pending, TS)
    assert (pending.status, pending.reject_reason) == ("rejected", "engine_error")
    assert [r["event"] for r in batch.reports] == ["rejected"]
    resting = order(status="new")
    batch = bury(command(resting, "cancel", outbox_id=4), resting, TS)
    assert resting.status == "new"
    assert [(r["event"], r["reason"]) for r in batch.reports] == [
        ("cancel_rejected", "engine_error")
    ]
    assert batch.outbox_ids == [4]


def test_two_rejected_cancels_are_two_reports_and_a_redelivery_is_the_same_one() -> None:
    eng = engine()
    done = order(status="filled", filled_quantity=10, fill_notional=Decimal("1900.00"))
    first = command(done, "cancel", outbox_id=11)
    second = command(done, "cancel", outbox_id=12)
    batch = eng.apply([first, second, first], {done.id: done}, TS)
    ids = [r["report_id"] for r in batch.reports]
    assert [r["event"] for r in batch.reports] == ["cancel_rejected"] * 3
    assert ids[0] != ids[1]  # two commands: a consumer must show both
    assert ids[0] == ids[2]  # the same command again: a consumer drops it


def test_market_data_is_one_update_per_symbol_written_as_the_model_writes_it() -> None:
    eng = engine()
    resting = [
        order(side="sell", limit_price=Decimal("190.10"), quantity=3),
        order(side="sell", limit_price=Decimal("190.20"), quantity=7),
        order(limit_price=Decimal("189.90"), quantity=4),
    ]
    crossing = order(limit_price=Decimal("190.20"), quantity=5)
    orders = [*resting, crossing]
    batch = eng.apply([command(o) for o in orders], {o.id: o for o in orders}, TS)
    assert len(batch.trades) == 2
    [update] = batch_updates(eng, batch.symbols, batch.trades, TS, depth=5)
    model = MarketDataUpdate.model_validate_json(update.update)
    assert update.update == model.model_dump_json().encode()
    assert (model.bid, model.bid_size, model.ask, model.ask_size) == (
        Decimal("189.90"),
        4,
        Decimal("190.20"),
        5,
    )
    assert [(t.price, t.quantity) for t in model.trades] == [
        (Decimal("190.10"), 3),
        (Decimal("190.20"), 2),
    ]
    assert len(update.trades) == 2
    empty = MatchingEngine(
        [InstrumentState("AAPL", Decimal("0.01"), Decimal("190.00"), "active")],
        market_collar_pct=Decimal("5"),
    )
    [quiet] = batch_updates(empty, {"AAPL"}, [], TS.replace(microsecond=0), depth=5)
    assert (
        quiet.update
        == MarketDataUpdate.model_validate_json(quiet.update).model_dump_json().encode()
    )
