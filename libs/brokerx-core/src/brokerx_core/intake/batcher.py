"""Group commit of concurrent order intakes: many requests' orders in one round trip.

Each api request hands its parsed order to `IntakeBatcher.place` and awaits the answer.
A few flusher tasks, each owning one PostgreSQL connection, take whatever requests are
waiting (up to `max_batch`) and run, per batch:

1. one read of the batch's instruments, then the instrument checks in Python
   (`prepare_order`: unknown symbol, halt/hours, tick, band, reservation size);
2. one call of an intake function for the orders that passed, as a single autocommitted
   statement: replay lookup, open-order cap, guarded reservation, order + outbox rows,
   order by order. A refused order writes nothing; the others go on. A batch of fewer
   than `SET_BASED_FROM` orders calls `intake_place_orders` (migration 0003: a few
   statements per order), a larger one `intake_place_batch` (0007: the checks in memory,
   a few statements per batch, dearer to start). Orders are passed in the engine's lock
   order (accounts by id, then positions by (account, symbol)) so two batches, or a
   batch and a matching transaction, never deadlock;
3. one pipelined XADD of the accepted orders' commands (after the commit, as the
   single-order path does; the outbox relay covers a failed publish).

Cancels and replaces queue the same way and are flushed by the same tasks, after the
new orders: cancels in two round trips (`cancels.cancel_orders`), replaces in two
(`replaces.replace_orders`), each with its own XADD. The SQL calls of a batch of new
orders and the connection-loss rules are `batch_calls`.

While one batch is in flight, the next requests queue up, so batches grow with load and
an idle system answers a lone request at once (no timer). Every order still gets
exactly the outcome it would get alone: its own checks, its own reservation, its own
replay. A batch that PostgreSQL refuses as a whole for a reason other than a lost
connection (a value it cannot store, say) is retried one order at a time, so one bad
request cannot fail its neighbours; nor can an error of the orders fail the cycle's
cancels or replaces. Deadlocks and serialization failures retry.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from prometheus_client import Histogram
from redis.asyncio import Redis

from brokerx_core.commands import publish_commands
from brokerx_core.db.base import utcnow
from brokerx_core.intake.amend import Amended
from brokerx_core.intake.batch_calls import (
    RETRYABLE,
    close_quietly,
    connection_lost,
    orders_by_client_order_ids,
    place_batch,
)
from brokerx_core.intake.cancels import CancelRequest, cancel_orders
from brokerx_core.intake.errors import IntakeError
from brokerx_core.intake.prepared import (
    INSTRUMENTS_SQL,
    SET_BASED_FROM,
    Placement,
    PreparedOrder,
    instrument_terms,
    prepare_order,
    replay_of,
)
from brokerx_core.intake.pretrade import InstrumentTerms, NewOrder, plausible_symbol
from brokerx_core.intake.replaces import ReplaceRequest, replace_orders
from brokerx_core.intake.rules import TradingRules
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

BATCH_SIZE = Histogram(
    "brokerx_intake_batch_orders",
    "Orders per intake group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

_T = TypeVar("_T")
Connect = Callable[[], Any]  # () -> Awaitable[asyncpg.Connection]


@dataclass(slots=True)
class _Cancel:
    request: CancelRequest
    future: asyncio.Future[Any] = field(repr=False)


@dataclass(slots=True)
class _Replace:
    request: ReplaceRequest
    future: asyncio.Future[Any] = field(repr=False)


@dataclass(slots=True)
class _Request:
    account_id: uuid.UUID
    order: NewOrder
    correlation_id: str | None
    max_open_orders: int | None
    future: asyncio.Future[Any] = field(repr=False)


# The requests of one kind taken for a flush cycle, and the method that flushes them.
_Phase = tuple[Sequence[_Request | _Cancel | _Replace], Callable[[Any, Any], Awaitable[None]]]


class IntakeBatcher:
    """Place orders by group commit; `start()` before use, `stop()` at shutdown.

    `rules` gives the trading rules in force (read once per batch).
    """

    def __init__(
        self,
        connect: Connect,
        redis: Redis,
        rules: Callable[[], TradingRules],
        *,
        max_batch: int = 256,
        connections: int = 2,
        clock: Callable[[], datetime] = utcnow,
        set_based_from: int = SET_BASED_FROM,
    ) -> None:
        self._connect = connect
        self._redis = redis
        self._rules = rules
        self._max_batch = max_batch
        self._connections = connections
        self._clock = clock
        self._set_based_from = set_based_from
        self._waiting: list[_Request] = []
        self._cancels: list[_Cancel] = []
        self._replaces: list[_Replace] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flusher(), name=f"intake-flusher-{n}")
            for n in range(self._connections)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        _fail(
            [*self._waiting, *self._cancels, *self._replaces],
            ConnectionError("intake is shutting down"),
        )
        self._waiting.clear()
        self._cancels.clear()
        self._replaces.clear()

    async def place(
        self,
        account_id: uuid.UUID,
        order: NewOrder,
        *,
        correlation_id: str | None = None,
        max_open_orders: int | None = None,
    ) -> Placement:
        """Intake of one order; raises its `IntakeError`, or a database/Redis error."""
        future: asyncio.Future[Placement] = self._future()
        self._waiting.append(_Request(account_id, order, correlation_id, max_open_orders, future))
        self._wake.set()
        return await future

    async def cancel(self, request: CancelRequest) -> Amended:
        """Write one `cancel` command; raises its `IntakeError`, or a database error."""
        future: asyncio.Future[Amended] = self._future()
        self._cancels.append(_Cancel(request, future))
        self._wake.set()
        return await future

    async def replace(self, request: ReplaceRequest) -> Amended:
        """Write one `replace` command (topping up the reservation when the new terms
        need more); raises its `IntakeError`, or a database error."""
        future: asyncio.Future[Amended] = self._future()
        self._replaces.append(_Replace(request, future))
        self._wake.set()
        return await future

    def _future(self) -> asyncio.Future[Any]:
        """The future a queued request is answered through (the flushers must run)."""
        if not self._tasks:
            raise RuntimeError("IntakeBatcher.start() was not called")
        return asyncio.get_running_loop().create_future()

    def _idle(self) -> bool:
        return not (self._waiting or self._cancels or self._replaces)

    # --- flushing -----------------------------------------------------------------

    async def _flusher(self) -> None:
        connection: Any = None
        try:
            while True:
                await self._wake.wait()
                if self._idle():
                    self._wake.clear()
                    continue
                batch = _take(self._waiting, self._max_batch)
                cancels = _take(self._cancels, self._max_batch)
                replaces = _take(self._replaces, self._max_batch)
                if self._idle():
                    self._wake.clear()
                phases: list[_Phase] = [
                    (batch, self._flush),
                    (cancels, self._flush_cancels),
                    (replaces, self._flush_replaces),
                ]
                connection = await self._cycle(connection, [p for p in phases if p[0]])
        finally:
            await close_quietly(connection)

    async def _cycle(self, connection: Any, phases: list[_Phase]) -> Any:
        """Flush each kind of request in turn; the connection to keep (None when lost).

        An error fails the requests of its own kind only (503 in the api): the orders of
        a cycle cannot fail its cancels, nor the cancels its replaces. A lost connection
        fails every request of the cycle not yet answered.
        """
        taken = [request for requests, _ in phases for request in requests]
        for requests, flush in phases:
            try:
                if connection is None or connection.is_closed():
                    connection = await self._connect()
                await flush(connection, requests)
            except asyncio.CancelledError:
                _fail(taken, ConnectionError("intake is shutting down"))
                raise
            except Exception as exc:
                lost = connection_lost(exc, connection)
                if isinstance(exc, asyncpg.InternalClientError):
                    exc = ConnectionError(f"intake connection broken: {exc}")
                _fail(taken if lost else requests, exc)  # the answered ones keep theirs
                if lost:
                    await close_quietly(connection)
                    return None
        return connection

    async def _flush_cancels(self, connection: Any, cancels: list[_Cancel]) -> None:
        rules = self._rules()
        outcomes = await cancel_orders(
            connection, [c.request for c in cancels], shards=rules.shards, now=self._clock()
        )
        await self._publish_amended(cancels, outcomes)

    async def _flush_replaces(self, connection: Any, replaces: list[_Replace]) -> None:
        rules = self._rules()
        outcomes = await replace_orders(
            connection, [r.request for r in replaces], rules=rules, now=self._clock()
        )
        await self._publish_amended(replaces, outcomes)

    async def _publish_amended(
        self, requests: Sequence[_Cancel | _Replace], outcomes: Sequence[Amended | IntakeError]
    ) -> None:
        commands = [o.command for o in outcomes if isinstance(o, Amended)]
        if commands:
            commands.sort(key=lambda command: command.outbox_id)
            await publish_commands(self._redis, commands)
        for request, outcome in zip(requests, outcomes, strict=True):
            _settle(request, outcome)

    async def _flush(self, connection: Any, batch: list[_Request]) -> None:
        BATCH_SIZE.observe(len(batch))
        now = self._clock()
        rules = self._rules()
        # A symbol PostgreSQL cannot take (a NUL, a lone surrogate) would fail the read of
        # every order's instrument: no instrument has one (unknown_symbol below).
        symbols = sorted({r.order.symbol for r in batch if plausible_symbol(r.order.symbol)})
        instruments = {
            row["symbol"]: instrument_terms(row)
            for row in await connection.fetch(INSTRUMENTS_SQL, symbols)
        }
        prepared: list[tuple[_Request, PreparedOrder]] = []
        refused: list[tuple[_Request, IntakeError]] = []
        for request in batch:
            try:
                prepared.append((request, _prepare(request, instruments, rules, now)))
            except IntakeError as exc:
                refused.append((request, exc))
        if refused:
            await self._answer_refused(connection, refused)
        if not prepared:
            return
        prepared.sort(key=lambda pair: pair[1].lock_key)
        try:
            outcomes = await place_batch(
                connection, [p for _, p in prepared], rules.shards, self._set_based_from
            )
        except RETRYABLE:
            raise
        except asyncpg.PostgresError as exc:
            if connection_lost(exc, connection) or len(prepared) == 1:
                raise
            log.warning("intake_batch_refused", error=type(exc).__name__, orders=len(prepared))
            await self._one_by_one(connection, prepared, rules.shards)
            return
        await self._publish_and_answer(prepared, outcomes)

    async def _one_by_one(
        self, connection: Any, prepared: list[tuple[_Request, PreparedOrder]], shards: int
    ) -> None:
        for request, item in prepared:
            try:
                outcomes = await place_batch(connection, [item], shards, self._set_based_from)
            except asyncpg.PostgresError as exc:
                if connection_lost(exc, connection):
                    raise
                _fail([request], exc)
                continue
            await self._publish_and_answer([(request, item)], outcomes)

    async def _publish_and_answer(
        self,
        prepared: Sequence[tuple[_Request, PreparedOrder]],
        outcomes: Sequence[Placement | IntakeError],
    ) -> None:
        commands = [
            outcome.command
            for outcome in outcomes
            if isinstance(outcome, Placement) and outcome.command is not None
        ]
        if commands:
            commands.sort(key=lambda command: command.outbox_id)
            await publish_commands(self._redis, commands)
        for (request, _), outcome in zip(prepared, outcomes, strict=True):
            _settle(request, outcome)

    async def _answer_refused(
        self, connection: Any, refused: list[tuple[_Request, IntakeError]]
    ) -> None:
        """A refused order whose client_order_id was used before is answered as that
        order's replay: a retry must not turn into an error because prices moved."""
        existing = await orders_by_client_order_ids(
            connection,
            [
                (r.account_id, r.order.client_order_id)
                for r, _ in refused
                if r.order.client_order_id is not None
            ],
        )
        for request, error in refused:
            key = (request.account_id, request.order.client_order_id or "")
            previous = existing.get(key)
            if previous is None:
                _settle(request, error)
                continue
            try:
                _settle(request, replay_of(previous, request.order))
            except IntakeError as exc:
                _settle(request, exc)


def _prepare(
    request: _Request, instruments: dict[str, InstrumentTerms], rules: TradingRules, now: datetime
) -> PreparedOrder:
    return prepare_order(
        request.account_id,
        request.order,
        instruments.get(request.order.symbol),
        rules,
        now=now,
        correlation_id=request.correlation_id,
        max_open_orders=request.max_open_orders,
    )


def _take(queue: list[_T], limit: int) -> list[_T]:
    taken = queue[:limit]
    del queue[:limit]
    return taken


def _settle(request: _Request | _Cancel | _Replace, outcome: object) -> None:
    if request.future.done():  # the client went away; its order stands regardless
        return
    if isinstance(outcome, BaseException):
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


def _fail(batch: Sequence[_Request | _Cancel | _Replace], exc: BaseException) -> None:
    for request in batch:
        _settle(request, exc)
