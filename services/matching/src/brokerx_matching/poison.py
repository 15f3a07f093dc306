"""What the engine does with a command it cannot apply (a poison message)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from brokerx_core.messages import OrderCommand
from brokerx_matching.reports import execution_report
from brokerx_matching.state import Batch, OrderState


def bury(command: OrderCommand, order: OrderState | None, ts: datetime) -> Batch:
    """The batch that retires a command the engine cannot apply (a poison message).

    Its outbox row goes (the relay would republish it forever); a `pending_new` order
    is rejected with reason `engine_error` (its reservation released) so recovery does
    not retry it at every rebuild; a cancel or replace gets its rejection report, and an
    open order whose replace is retired gives back what the api reserved for the refused
    terms (its row is written back as loaded, its reservation capped at what its terms
    need, as for any refused replace). The books are not touched, so this works whatever
    state the engine is in.
    """
    batch = Batch(ts)
    if command.outbox_id is not None:
        batch.outbox_ids.append(command.outbox_id)
    if order is None:
        return batch
    correlation_id = command.correlation_id
    if command.type == "new_order" and order.status == "pending_new":
        order.status = "rejected"
        order.reject_reason = "engine_error"
        batch.touch(order)
        event: Literal["rejected", "cancel_rejected", "replace_rejected"] = "rejected"
    elif command.type == "cancel":
        event = "cancel_rejected"
    elif command.type == "replace":
        event = "replace_rejected"
        if order.is_open:  # as for any rejected replace (commands.py): the api's top-up
            batch.touch(order)
            batch.excess_reservations.add(order.id)
    else:
        return batch
    batch.reports.append(
        execution_report(order, event, ts, reason="engine_error", correlation_id=correlation_id)
    )
    return batch
