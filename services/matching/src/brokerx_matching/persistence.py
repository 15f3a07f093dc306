"""One PostgreSQL transaction per batch, with bulk statements (UNNEST arrays).

Runs on the shard's own asyncpg connection — the one holding the shard's advisory
lock — so a process that lost its lock (its connection is gone) cannot commit.

Lock order (deadlock freedom with the api and the other shards): order rows first,
then accounts sorted by id, then positions sorted by (account, symbol). The api locks
an order before topping up its account/position (replace) and never holds two accounts.
Rows are locked FOR NO KEY UPDATE (what an UPDATE of non-key columns takes), never FOR
UPDATE: inserting an order or a ledger entry takes FOR KEY SHARE on the account it
references, which FOR UPDATE would block — intake holding a position and inserting an
order would then deadlock with a batch holding the account and wanting the position.

Reservations are changed relative to the locked row (`state.ReservationOp`), never
from the engine's copy: the api may have topped one up meanwhile (docs/trading.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from brokerx_core.money import ZERO
from brokerx_matching.state import AVG_QUANTUM, Batch, OrderState, TradeRecord, new_order_state

# Column order of `state.new_order_state`.
ORDER_COLUMNS = (
    "o.id, o.account_id, a.client_id, o.client_order_id, o.symbol, o.side, o.type,"
    " o.quantity, o.limit_price, o.time_in_force, o.status, o.filled_quantity,"
    " o.avg_fill_price, o.version, o.reservation_price, o.priority_seq, o.created_at,"
    " o.correlation_id, o.reject_reason"
)
ORDER_FROM = "FROM client_order o JOIN account a ON a.id = o.account_id"

_LOAD_ORDERS = f"SELECT {ORDER_COLUMNS} {ORDER_FROM} WHERE o.id = ANY($1::uuid[])"
_EXISTING_OUTBOX = "SELECT id FROM outbox WHERE id = ANY($1::bigint[])"

_UPDATE_ORDERS = """
WITH u AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::bigint[], $4::numeric[], $5::int[], $6::bigint[],
        $7::text[], $8::bigint[], $9::numeric[], $10::text[],
        $11::numeric[], $12::numeric[], $13::numeric[], $14::bigint[], $15::bigint[],
        $16::bigint[]
    ) AS u(id, status, filled_quantity, avg_fill_price, version, priority_seq,
           reject_reason, quantity, limit_price, time_in_force, ca, cb, cc, qa, qb, qc)
), old AS (
    SELECT o.id, o.reserved_amount, o.reserved_quantity
    FROM client_order o JOIN u ON u.id = o.id
    FOR NO KEY UPDATE OF o
)
UPDATE client_order o SET
    status = u.status,
    filled_quantity = u.filled_quantity,
    avg_fill_price = u.avg_fill_price,
    version = u.version,
    priority_seq = u.priority_seq,
    reject_reason = u.reject_reason,
    quantity = u.quantity,
    limit_price = u.limit_price,
    time_in_force = u.time_in_force,
    reserved_amount = CASE WHEN u.status IN ('filled', 'canceled', 'expired', 'rejected')
        THEN 0 ELSE GREATEST(LEAST(old.reserved_amount - u.ca, u.cb) - u.cc, 0) END,
    reserved_quantity = CASE WHEN u.status IN ('filled', 'canceled', 'expired', 'rejected')
        THEN 0 ELSE GREATEST(LEAST(old.reserved_quantity - u.qa, u.qb) - u.qc, 0) END,
    updated_at = $17
FROM u JOIN old ON old.id = u.id
WHERE o.id = u.id
RETURNING o.account_id, o.symbol,
    old.reserved_amount - o.reserved_amount, old.reserved_quantity - o.reserved_quantity
"""

_LOCK_ACCOUNTS = (
    "SELECT id, cash FROM account WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE"
)
_LOCK_POSITIONS = """
SELECT p.account_id, p.symbol, p.quantity, p.avg_cost
FROM position p JOIN unnest($1::uuid[], $2::text[]) AS k(account_id, symbol)
    ON p.account_id = k.account_id AND p.symbol = k.symbol
ORDER BY p.account_id, p.symbol
FOR NO KEY UPDATE OF p
"""
_INSERT_TRADES = """
INSERT INTO trade (id, symbol, price, quantity, buy_order_id, sell_order_id,
                   buyer_account_id, seller_account_id, aggressor_side, created_at)
SELECT id, symbol, price, quantity, buy_order_id, sell_order_id,
       buyer_account_id, seller_account_id, aggressor_side, $10
FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::bigint[], $5::uuid[], $6::uuid[],
            $7::uuid[], $8::uuid[], $9::text[]) WITH ORDINALITY
    AS t(id, symbol, price, quantity, buy_order_id, sell_order_id,
         buyer_account_id, seller_account_id, aggressor_side, ord)
ORDER BY ord
"""
_INSERT_LEDGER = """
INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after, reference_id, created_at)
SELECT id, account_id, kind, amount, balance_after, reference_id, $7
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::numeric[], $5::numeric[], $6::uuid[])
    WITH ORDINALITY AS e(id, account_id, kind, amount, balance_after, reference_id, ord)
ORDER BY ord
"""
_UPDATE_ACCOUNTS = """
UPDATE account a SET
    cash = u.cash,
    reserved_cash = a.reserved_cash + u.reserved_delta,
    version = a.version + 1,
    updated_at = $4
FROM unnest($1::uuid[], $2::numeric[], $3::numeric[]) AS u(id, cash, reserved_delta)
WHERE a.id = u.id
"""
_UPDATE_POSITIONS = """
UPDATE position p SET
    quantity = u.quantity,
    reserved_quantity = p.reserved_quantity + u.reserved_delta,
    avg_cost = u.avg_cost,
    updated_at = $6
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::numeric[])
    AS u(account_id, symbol, quantity, reserved_delta, avg_cost)
WHERE p.account_id = u.account_id AND p.symbol = u.symbol
"""
_INSERT_POSITIONS = """
INSERT INTO position (account_id, symbol, quantity, reserved_quantity, avg_cost, updated_at)
SELECT account_id, symbol, quantity, 0, avg_cost, $5
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::numeric[])
    AS u(account_id, symbol, quantity, avg_cost)
"""
_UPDATE_INSTRUMENTS = """
UPDATE instrument i SET last_price = u.price, last_trade_at = $3
FROM unnest($1::text[], $2::numeric[]) AS u(symbol, price)
WHERE i.symbol = u.symbol
"""
_DELETE_OUTBOX = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"

Connection = Any  # asyncpg.Connection (asyncpg ships no type information)


async def existing_outbox_ids(conn: Connection, ids: Collection[int]) -> set[int]:
    """The outbox rows among `ids` that still exist (their commands are not applied yet)."""
    if not ids:
        return set()
    rows = await conn.fetch(_EXISTING_OUTBOX, list(ids))
    return {row[0] for row in rows}


async def load_orders(conn: Connection, ids: Collection[uuid.UUID]) -> dict[uuid.UUID, OrderState]:
    """The rows of the given orders (missing ids are simply absent)."""
    if not ids:
        return {}
    rows = await conn.fetch(_LOAD_ORDERS, list(ids))
    return {row[0]: new_order_state(row) for row in rows}


def _op_columns(order: OrderState) -> tuple[Any, Any, Any, Any, Any, Any]:
    cash_op, qty_op = order.cash_op, order.qty_op
    ca, cb, cc = (cash_op.a, cash_op.b, cash_op.c) if cash_op is not None else (ZERO, None, ZERO)
    qa, qb, qc = (qty_op.a, qty_op.b, qty_op.c) if qty_op is not None else (0, None, 0)
    return ca, cb, cc, qa, qb, qc


async def _update_orders(conn: Connection, orders: Sequence[OrderState], ts: datetime) -> list[Any]:
    columns: list[list[Any]] = [[] for _ in range(16)]
    for order in orders:
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
            *_op_columns(order),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows: list[Any] = await conn.fetch(_UPDATE_ORDERS, *columns, ts)
    if len(rows) != len(orders):
        raise RuntimeError(f"updated {len(rows)} of {len(orders)} orders")
    return rows


def _settle_cash(trades: Sequence[TradeRecord], cash: dict[uuid.UUID, Decimal]) -> list[list[Any]]:
    """Ledger entries of the trades (buyer −notional, seller +notional), in trade order,
    each with the account's balance after it; `cash` is updated in place."""
    columns: list[list[Any]] = [[] for _ in range(6)]
    for trade in trades:
        for account, kind, amount in (
            (trade.buyer_account_id, "buy", -trade.notional),
            (trade.seller_account_id, "sell", trade.notional),
        ):
            balance = cash[account] + amount
            cash[account] = balance
            for column, value in zip(
                columns, (uuid.uuid4(), account, kind, amount, balance, trade.id), strict=True
            ):
                column.append(value)
    return columns


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


async def commit_batch(conn: Connection, batch: Batch) -> None:
    """Persist a batch in one transaction (order updates, trades, ledger, accounts,
    positions, instrument last price, outbox deletes). Raises on any failure."""
    ts = batch.ts
    async with conn.transaction():
        reserved_cash: dict[uuid.UUID, Decimal] = {}
        reserved_qty: dict[tuple[uuid.UUID, str], int] = {}
        if batch.orders:
            for account_id, symbol, released_cash, released_qty in await _update_orders(
                conn, list(batch.orders.values()), ts
            ):
                if released_cash:
                    reserved_cash[account_id] = reserved_cash.get(account_id, ZERO) - released_cash
                if released_qty:
                    key = (account_id, symbol)
                    reserved_qty[key] = reserved_qty.get(key, 0) - released_qty
        trades = batch.trades
        accounts = set(reserved_cash)
        position_keys = set(reserved_qty)
        for trade in trades:
            accounts.add(trade.buyer_account_id)
            accounts.add(trade.seller_account_id)
            position_keys.add((trade.buyer_account_id, trade.symbol))
            position_keys.add((trade.seller_account_id, trade.symbol))
        cash: dict[uuid.UUID, Decimal] = {}
        if accounts:
            locked = await conn.fetch(_LOCK_ACCOUNTS, sorted(accounts))
            cash = {row[0]: row[1] for row in locked}
        positions: dict[tuple[uuid.UUID, str], list[Any]] = {}
        if position_keys:
            keys = sorted(position_keys)
            locked = await conn.fetch(_LOCK_POSITIONS, [k[0] for k in keys], [k[1] for k in keys])
            positions = {(row[0], row[1]): [row[2], row[3], False] for row in locked}
        if trades:
            await conn.execute(
                _INSERT_TRADES,
                [t.id for t in trades],
                [t.symbol for t in trades],
                [t.price for t in trades],
                [t.quantity for t in trades],
                [t.buy_order_id for t in trades],
                [t.sell_order_id for t in trades],
                [t.buyer_account_id for t in trades],
                [t.seller_account_id for t in trades],
                [t.aggressor_side for t in trades],
                ts,
            )
            await conn.execute(_INSERT_LEDGER, *_settle_cash(trades, cash), ts)
            _settle_positions(trades, positions)
        if accounts:
            ids = sorted(accounts)
            await conn.execute(
                _UPDATE_ACCOUNTS,
                ids,
                [cash[i] for i in ids],
                [reserved_cash.get(i, ZERO) for i in ids],
                ts,
            )
        await _write_positions(conn, positions, reserved_qty, ts)
        traded = {t.symbol: t.price for t in trades}  # last trade of each symbol wins
        if traded:
            await conn.execute(_UPDATE_INSTRUMENTS, list(traded), list(traded.values()), ts)
        if batch.outbox_ids:
            await conn.execute(_DELETE_OUTBOX, batch.outbox_ids)


async def _write_positions(
    conn: Connection,
    positions: dict[tuple[uuid.UUID, str], list[Any]],
    reserved_qty: dict[tuple[uuid.UUID, str], int],
    ts: datetime,
) -> None:
    existing = [k for k, v in positions.items() if not v[2]]
    created = [k for k, v in positions.items() if v[2]]
    if existing:
        await conn.execute(
            _UPDATE_POSITIONS,
            [k[0] for k in existing],
            [k[1] for k in existing],
            [positions[k][0] for k in existing],
            [reserved_qty.get(k, 0) for k in existing],
            [positions[k][1] for k in existing],
            ts,
        )
    if created:
        await conn.execute(
            _INSERT_POSITIONS,
            [k[0] for k in created],
            [k[1] for k in created],
            [positions[k][0] for k in created],
            [positions[k][1] for k in created],
            ts,
        )
