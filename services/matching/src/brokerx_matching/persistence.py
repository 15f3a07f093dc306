"""One PostgreSQL transaction per batch, with bulk statements (batch_sql.py).

Runs on the shard's own asyncpg connection — the one holding the shard's advisory
lock — so a process that lost its lock (its connection is gone) cannot commit.

Rows are locked FOR NO KEY UPDATE (what an UPDATE of non-key columns takes), never FOR
UPDATE: inserting an order or a ledger entry takes FOR KEY SHARE on the account it
references, which FOR UPDATE would block — intake holding a position and inserting an
order would then deadlock with a batch holding the account and wanting the position.
The api locks an order before topping up its account/position (replace) and never
holds two accounts; the lock order is in batch_sql.py.

Reservations are changed relative to the locked row (`state.ReservationOp`), never
from the engine's copy: the api may have topped one up meanwhile (docs/trading.md).

Round trips, not rows, are what a batch costs at a few orders per batch (each is a
send, a wake-up and asyncpg's Python around them), so a batch makes as few as the lock
order allows. Before applying, one read (outbox rows still there + rows of the orders
not in memory). Then a batch without trades is one statement (orders, outbox deletes,
released reservations); a batch with trades is BEGIN, one statement for the orders and
outbox deletes that locks and reads the accounts then the positions to settle, one that
writes everything else (trades, ledger, accounts, positions, instruments), COMMIT. The
first statement also writes the report outbox (report_outbox.py): the batch's reports
in, the last published batch's out. A batch that refused a replace of an open order
(rare) runs in a transaction that first locks those orders and reads the outbox, to
give back the api's top-up safely (`_cap_excess_reservations`).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from decimal import Decimal
from typing import Any

from brokerx_core.money import ZERO
from brokerx_matching.batch_sql import (
    APPLY_AND_LOCK,
    APPLY_WITHOUT_TRADES,
    BATCH_INPUTS,
    EXISTING_OUTBOX,
    LOAD_ORDERS,
    LOCK_ORDERS,
    REPLACES_IN_FLIGHT,
    WRITE_SETTLEMENT,
)
from brokerx_matching.state import AVG_QUANTUM, Batch, OrderState, TradeRecord, new_order_state

Connection = Any  # asyncpg.Connection (asyncpg ships no type information)


async def existing_outbox_ids(conn: Connection, ids: Collection[int]) -> set[int]:
    """The outbox rows among `ids` that still exist (their commands are not applied yet)."""
    if not ids:
        return set()
    rows = await conn.fetch(EXISTING_OUTBOX, list(ids))
    return {row[0] for row in rows}


async def load_orders(conn: Connection, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, OrderState]:
    """The rows of the given orders (missing ids are simply absent)."""
    if not ids:
        return {}
    rows = await conn.fetch(LOAD_ORDERS, list(ids))
    return {row[0]: new_order_state(row) for row in rows}


async def load_batch_inputs(
    conn: Connection, outbox_ids: Collection[int], order_ids: Collection[uuid.UUID]
) -> tuple[set[int], dict[uuid.UUID, OrderState]]:
    """`existing_outbox_ids` and `load_orders` in one round trip."""
    if not outbox_ids and not order_ids:
        return set(), {}
    existing: set[int] = set()
    orders: dict[uuid.UUID, OrderState] = {}
    for row in await conn.fetch(BATCH_INPUTS, list(order_ids), list(outbox_ids)):
        outbox_id = row[0]
        if outbox_id is None:
            orders[row[1]] = new_order_state(row[1:])
        else:
            existing.add(outbox_id)
    return existing, orders


def _order_columns(batch: Batch, outbox: Sequence[Any]) -> list[Any]:
    """$1-$22 of the order statements: the columns of the orders, the time, the outbox
    rows to delete, then the report outbox's parameters (`ReportOutbox.params`)."""
    columns: list[list[Any]] = [[] for _ in range(16)]
    for order in batch.orders.values():
        cash_op, qty_op = order.cash_op, order.qty_op
        values = (
            order.id,
            order.status,
            order.filled_quantity,
            order.avg_fill_price,
            order.version,
            order.priority_seq,
            order.reject_reason,
            order.quantity,
            order.limit_price,
            order.time_in_force,
            *((cash_op.a, cash_op.b, cash_op.c) if cash_op is not None else (ZERO, None, ZERO)),
            *((qty_op.a, qty_op.b, qty_op.c) if qty_op is not None else (0, None, 0)),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return [*columns, batch.ts, batch.outbox_ids, *outbox]


def _settle_cash(trades: Sequence[TradeRecord], cash: dict[uuid.UUID, Decimal]) -> list[list[Any]]:
    """Ledger entries of the trades (buyer −notional, seller +notional), in trade order,
    each with the account's balance after it; `cash` is updated in place."""
    accounts: list[uuid.UUID] = []
    kinds: list[str] = []
    amounts: list[Decimal] = []
    balances: list[Decimal] = []
    references: list[uuid.UUID] = []
    for trade in trades:
        notional = trade.notional
        buyer, seller = trade.buyer_account_id, trade.seller_account_id
        balance = cash[buyer] - notional
        cash[buyer] = balance
        accounts.append(buyer)
        kinds.append("buy")
        amounts.append(-notional)
        balances.append(balance)
        references.append(trade.id)
        balance = cash[seller] + notional
        cash[seller] = balance
        accounts.append(seller)
        kinds.append("sell")
        amounts.append(notional)
        balances.append(balance)
        references.append(trade.id)
    return [accounts, kinds, amounts, balances, references]


def _settle_positions(
    trades: Sequence[TradeRecord], positions: dict[tuple[uuid.UUID, str], list[Any]]
) -> None:
    """Quantity and weighted average cost after each trade (a sell keeps avg_cost)."""
    for trade in trades:
        buyer = positions.setdefault((trade.buyer_account_id, trade.symbol), [0, ZERO, True])
        quantity, avg_cost = buyer[0], buyer[1]
        total = quantity + trade.quantity
        buyer[0] = total
        buyer[1] = ((quantity * avg_cost + trade.price * trade.quantity) / total).quantize(
            AVG_QUANTUM
        )
        seller = positions.setdefault((trade.seller_account_id, trade.symbol), [0, ZERO, True])
        seller[0] -= trade.quantity


async def commit_batch(
    conn: Connection, batch: Batch, outbox: Sequence[Any]
) -> tuple[int, int] | None:
    """Persist a batch atomically (order updates, trades, ledger, accounts, positions,
    instrument last price, outbox deletes, report outbox with `outbox` =
    `ReportOutbox.params`). Returns the lowest and highest id of the reports put in the
    report outbox (None: no report). Raises on any failure."""
    if not batch.trades and not batch.excess_reservations:
        # One statement: atomic without a transaction block (and its two round trips).
        return _reported(await conn.fetch(APPLY_WITHOUT_TRADES, *_order_columns(batch, outbox)))
    async with conn.transaction():
        if batch.excess_reservations:
            await _cap_excess_reservations(conn, batch)
        if not batch.trades:
            return _reported(await conn.fetch(APPLY_WITHOUT_TRADES, *_order_columns(batch, outbox)))
        return await _settle(conn, batch, outbox)


def _reported(rows: Sequence[Any]) -> tuple[int, int] | None:
    """The report outbox ids in the last row of `APPLY_WITHOUT_TRADES`, if any."""
    if rows and rows[-1][0] == 4:  # last: (4, NULL, NULL, lowest, highest)
        return int(rows[-1][3]), int(rows[-1][4])
    return None


async def _cap_excess_reservations(conn: Connection, batch: Batch) -> None:
    """Cap the reservation of each order in `batch.excess_reservations` that is still
    open at what its terms need, unless a replace of it is still in the outbox.

    A replace the engine rejects may have been topped up by the api, and that top-up
    would otherwise stay reserved until the order ends. But the api may also have
    accepted a later replace with the same version (a rejection does not change it)
    and counted on that reservation when it computed its own top-up: capping it now
    would leave that replace short once applied. Locking the orders first makes the
    outbox read see every replace written for them (the api locks the order to write
    one); an order with one in flight keeps its reservation, which that replace caps
    when applied (or its rejection does, once it is the last).
    """
    orders = batch.orders
    ids = sorted(i for i in batch.excess_reservations if orders[i].is_open)
    if not ids:
        return
    await conn.execute(LOCK_ORDERS, ids)
    in_flight = {row[0] for row in await conn.fetch(REPLACES_IN_FLIGHT, ids, batch.outbox_ids)}
    for order_id in ids:
        if order_id not in in_flight:
            orders[order_id].cap_reservation_to_terms()


async def _settle(conn: Connection, batch: Batch, outbox: Sequence[Any]) -> tuple[int, int] | None:
    trades = batch.trades
    accounts = {t.buyer_account_id for t in trades} | {t.seller_account_id for t in trades}
    keys = sorted(
        {(t.buyer_account_id, t.symbol) for t in trades}
        | {(t.seller_account_id, t.symbol) for t in trades}
    )
    rows = await conn.fetch(
        APPLY_AND_LOCK,
        *_order_columns(batch, outbox),
        sorted(accounts),
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    reserved_cash: dict[uuid.UUID, Decimal] = {}
    reserved_qty: dict[tuple[uuid.UUID, str], int] = {}
    cash: dict[uuid.UUID, Decimal] = {}
    positions: dict[tuple[uuid.UUID, str], list[Any]] = {}
    updated = 0
    reported: tuple[int, int] | None = None
    for kind, account_id, symbol, released_cash, released_qty, balance, quantity, avg in rows:
        if kind == 0:
            updated += 1
            if released_cash:
                reserved_cash[account_id] = reserved_cash.get(account_id, ZERO) - released_cash
            if released_qty:
                key = (account_id, symbol)
                reserved_qty[key] = reserved_qty.get(key, 0) - released_qty
        elif kind == 1:
            cash[account_id] = balance
        elif kind == 2:
            positions[(account_id, symbol)] = [quantity, avg, False]
        else:  # 4: the report outbox ids
            reported = (released_qty, quantity)
    if updated != len(batch.orders):
        raise RuntimeError(f"updated {updated} of {len(batch.orders)} orders")
    ledger = _settle_cash(trades, cash)
    _settle_positions(trades, positions)
    ids = sorted(cash)  # the trades' accounts and those whose reservation shrank
    existing = [k for k, v in positions.items() if not v[2]]
    created = [k for k, v in positions.items() if v[2]]
    traded = {t.symbol: t.price for t in trades}  # last trade of each symbol wins
    await conn.execute(
        WRITE_SETTLEMENT,
        # trades ($1-$9)
        [t.id for t in trades],
        [t.symbol for t in trades],
        [t.price for t in trades],
        [t.quantity for t in trades],
        [t.buy_order_id for t in trades],
        [t.sell_order_id for t in trades],
        [t.buyer_account_id for t in trades],
        [t.seller_account_id for t in trades],
        [t.aggressor_side for t in trades],
        # ledger entries ($10-$14)
        *ledger,
        # accounts ($15-$17)
        ids,
        [cash[i] for i in ids],
        [reserved_cash.get(i, ZERO) for i in ids],
        # existing positions ($18-$22)
        [k[0] for k in existing],
        [k[1] for k in existing],
        [positions[k][0] for k in existing],
        [reserved_qty.get(k, 0) for k in existing],
        [positions[k][1] for k in existing],
        # instruments ($23-$24), time ($25)
        list(traded),
        list(traded.values()),
        batch.ts,
        # new positions ($26-$29)
        [k[0] for k in created],
        [k[1] for k in created],
        [positions[k][0] for k in created],
        [positions[k][1] for k in created],
    )
    return reported
