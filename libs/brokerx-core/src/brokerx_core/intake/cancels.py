"""Cancels by group commit: many requests' `cancel` commands in two round trips.

One read of the batch's orders, the checks of `amend.cancel_command` in Python, then one
autocommitted INSERT of every outbox row. A cancel takes no lock (the engine decides
whether it still applies: `canceled` or `cancel_rejected`), so reading and writing in
two statements is what the single-request path did inside its transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brokerx_core.commands import outbox_payload, stamp_inserted
from brokerx_core.intake.amend import Amended, cancel_command
from brokerx_core.intake.errors import IntakeError
from brokerx_core.intake.records import ORDERS_BY_IDS_SQL, OrderRecord
from brokerx_core.messages import OrderCommand
from brokerx_core.streams import order_stream_for

_INSERT_OUTBOX = (
    "INSERT INTO outbox (stream, payload)"
    " SELECT * FROM unnest($1::text[], $2::text[]) RETURNING id, payload"
)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    account_id: uuid.UUID
    order_id: uuid.UUID
    expected_version: int | None
    correlation_id: str | None = None


async def cancel_orders(
    connection: Any, requests: Sequence[CancelRequest], *, shards: int, now: datetime
) -> list[Amended | IntakeError]:
    """Write the `cancel` command of each request that passes its checks (asyncpg
    connection, autocommit); the outcome of each request, in order."""
    rows = await connection.fetch(ORDERS_BY_IDS_SQL, list({r.order_id for r in requests}))
    orders = {row["id"]: OrderRecord.from_mapping(row) for row in rows}
    outcomes: list[Amended | IntakeError | None] = []
    accepted: list[tuple[int, OrderRecord, OrderCommand]] = []
    for index, request in enumerate(requests):
        order = orders.get(request.order_id)
        try:
            command = cancel_command(
                order,
                request.account_id,
                request.expected_version,
                now=now,
                correlation_id=request.correlation_id,
            )
        except IntakeError as exc:
            outcomes.append(exc)
            continue
        assert order is not None
        outcomes.append(None)  # written below
        accepted.append((index, order, command))
    if accepted:
        streams = [order_stream_for(command.symbol, shards) for _, _, command in accepted]
        payloads = [outbox_payload(command) for _, _, command in accepted]
        rows = await connection.fetch(_INSERT_OUTBOX, streams, payloads)
        pending = stamp_inserted(
            [command for _, _, command in accepted],
            payloads,
            [(row["id"], row["payload"]) for row in rows],
            shards,
        )
        for (index, order, _), command_out in zip(accepted, pending, strict=True):
            outcomes[index] = Amended(order, command_out)
    return [outcome for outcome in outcomes if outcome is not None]
