"""Engine commands: write them to the outbox in the caller's transaction, publish after commit.

Every `new_order`, `cancel`, `replace` and `expire` command travels the same way
(docs/trading.md): an `outbox` row is written in the transaction that causes the
command, with the `OrderCommand` JSON *without* `outbox_id` as its payload; after the
commit the command is XADDed to `orders.<shard>` *with* the row id (the fast path). The
engine deletes the row when it applies the command; the relay republishes rows left
behind. The api, the DAY-order expiry and the market maker all go through this module.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.messages import CommandType, OrderCommand
from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import order_stream_for

log = get_logger(__name__)

_INSERT_OUTBOX = text(
    "INSERT INTO outbox (stream, payload) VALUES (:stream, :payload) RETURNING id"
)
_INSERT_OUTBOX_MANY = text(
    "INSERT INTO outbox (stream, payload)"
    " SELECT * FROM unnest(CAST(:streams AS text[]), CAST(:payloads AS text[]))"
    " RETURNING id, payload"
)


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A committed-to-be command: its outbox row id, its stream, and the message to XADD."""

    outbox_id: int
    stream: str
    command: OrderCommand  # carries `outbox_id`

    def fields(self) -> dict[str, str]:
        """The stream entry fields (`data` = the command JSON)."""
        return {"data": self.command.model_dump_json()}


def order_command(
    type: CommandType,
    order_id: uuid.UUID,
    symbol: str,
    version: int,
    *,
    ts: datetime,
    correlation_id: str | None = None,
    new_quantity: int | None = None,
    new_limit_price: Decimal | None = None,
    new_time_in_force: str | None = None,
) -> OrderCommand:
    """Build a command (without `outbox_id`: the outbox row gives it one)."""
    return OrderCommand(
        type=type,
        order_id=order_id,
        symbol=symbol,
        version=version,
        correlation_id=correlation_id,
        new_quantity=new_quantity,
        new_limit_price=new_limit_price,
        new_time_in_force=new_time_in_force,
        ts=ts,
    )


def outbox_payload(command: OrderCommand) -> str:
    """The outbox `payload` of a command: its JSON without `outbox_id`."""
    return command.model_dump_json(exclude={"outbox_id"})


def pending_from_outbox(outbox_id: int, payload: str, *, shards: int) -> PendingCommand:
    """Rebuild the message of an outbox row (the relay's path): the payload plus its id,
    routed to its symbol's stream under `shards` (the current `MATCHING_SHARDS`).

    The row's own `stream` column is not used: it names the shard of the count in force
    when the command was written, which no engine may consume any more once the count
    changed (docs/decisions.md, "Report outbox").

    Raises pydantic.ValidationError when the payload is not a command.
    """
    return stamp(OrderCommand.model_validate_json(payload), outbox_id, shards)


def stamp(command: OrderCommand, outbox_id: int, shards: int) -> PendingCommand:
    """The publishable form of a command whose outbox row is `outbox_id`."""
    return PendingCommand(
        outbox_id,
        order_stream_for(command.symbol, shards),
        command.model_copy(update={"outbox_id": outbox_id}),
    )


async def write_command(
    session: AsyncSession, command: OrderCommand, *, shards: int
) -> PendingCommand:
    """Insert the outbox row of one command in the session's transaction (publish later)."""
    stream = order_stream_for(command.symbol, shards)
    result = await session.execute(
        _INSERT_OUTBOX, {"stream": stream, "payload": outbox_payload(command)}
    )
    return stamp(command, int(result.scalar_one()), shards)


async def write_commands(
    session: AsyncSession, commands: Sequence[OrderCommand], *, shards: int
) -> list[PendingCommand]:
    """Insert the outbox rows of many commands with one statement, in their order."""
    if not commands:
        return []
    if len(commands) == 1:
        return [await write_command(session, commands[0], shards=shards)]
    streams = [order_stream_for(c.symbol, shards) for c in commands]
    payloads = [outbox_payload(c) for c in commands]
    result = await session.execute(_INSERT_OUTBOX_MANY, {"streams": streams, "payloads": payloads})
    return stamp_inserted(commands, payloads, [(row[0], row[1]) for row in result], shards)


def stamp_inserted(
    commands: Sequence[OrderCommand],
    payloads: Sequence[str],
    rows: Sequence[tuple[int, str]],
    shards: int,
) -> list[PendingCommand]:
    """Pair the (id, payload) rows of a multi-row outbox INSERT with their commands.

    RETURNING order is not guaranteed, so rows are matched through their payload.
    """
    ids: dict[str, list[int]] = {}
    for outbox_id, payload in rows:
        ids.setdefault(payload, []).append(int(outbox_id))
    return [
        stamp(command, ids[payload].pop(), shards)
        for command, payload in zip(commands, payloads, strict=True)
    ]


async def publish_commands(redis: Redis, pending: Sequence[PendingCommand]) -> int:
    """XADD committed commands (one XADD, or one pipeline for several).

    Call only after the commit. A failure is logged, never raised: the outbox row is
    committed, so the relay publishes the command later. Returns how many were sent.
    """
    if not pending:
        return 0
    try:
        if len(pending) == 1:
            await redis.xadd(pending[0].stream, pending[0].fields())  # type: ignore[arg-type]
        else:
            async with redis.pipeline(transaction=False) as pipe:
                for item in pending:
                    pipe.xadd(item.stream, item.fields())  # type: ignore[arg-type]
                await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning(
            "command_publish_failed",
            error=str(exc),
            outbox_ids=[p.outbox_id for p in pending[:20]],
            count=len(pending),
        )
        return 0
    return len(pending)
