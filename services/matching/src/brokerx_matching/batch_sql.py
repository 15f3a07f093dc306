"""The SQL of a batch (see persistence.py for how and in which order it runs).

Every statement takes whole columns as arrays (UNNEST), so its cost does not grow with
round trips as a batch grows. Lock order (deadlock freedom with the api and the other
shards): order rows first, then accounts sorted by id, then positions sorted by
(account, symbol). Where one statement takes several of these, each locking CTE is
MATERIALIZED (never inlined, evaluated when first read) and the final UNION ALL reads
them in that order, each branch to its end before the next: PostgreSQL's executor runs
an Append's children one after the other, so the lock order is the documented one.

Rows are found by key (`= ANY(array)`, index lookups): `account`, `position` and
`client_order` are updated by every batch, and a scan of one between two vacuums reads
every dead row version left behind.
"""

from __future__ import annotations

# Column order of `state.new_order_state`.
ORDER_COLUMNS = (
    "o.id, o.account_id, a.client_id, o.client_order_id, o.symbol, o.side, o.type,"
    " o.quantity, o.limit_price, o.time_in_force, o.status, o.filled_quantity,"
    " o.avg_fill_price, o.version, o.reservation_price, o.priority_seq, o.created_at,"
    " o.correlation_id, o.reject_reason"
)
ORDER_FROM = "FROM client_order o JOIN account a ON a.id = o.account_id"

# The same for a few orders by id, the account's client looked up by key: the join
# above lets the planner hash a scan of `account`, which every trade updates (so full of
# dead row versions between vacuums); that scan cost more than the rest of a batch.
_ORDER_BY_ID_COLUMNS = ORDER_COLUMNS.replace(
    "a.client_id", "(SELECT a.client_id FROM account a WHERE a.id = o.account_id)"
)
LOAD_ORDERS = f"SELECT {_ORDER_BY_ID_COLUMNS} FROM client_order o WHERE o.id = ANY($1::uuid[])"
EXISTING_OUTBOX = "SELECT id FROM outbox WHERE id = ANY($1::bigint[])"
# Both reads of a batch in one round trip: order rows (first column NULL), then the
# outbox rows still present (first column the id, the others NULL).
BATCH_INPUTS = (
    f"SELECT NULL::bigint, {_ORDER_BY_ID_COLUMNS} FROM client_order o"
    " WHERE o.id = ANY($1::uuid[])"
    " UNION ALL SELECT id"
    + ", NULL" * (ORDER_COLUMNS.count(",") + 1)
    + " FROM outbox WHERE id = ANY($2::bigint[])"
)

# Orders whose reservation the batch may cap (`Batch.excess_reservations`), locked first
# (order rows come first in the lock order), so that the next statement, with a fresh
# snapshot, sees every replace the api wrote for them: once an order is locked the api
# can top it up no more until the batch commits.
LOCK_ORDERS = "SELECT id FROM client_order WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE"
# Those of the orders ($1) with a replace still in the outbox, other than the batch's own
# commands ($2): its top-up may already be in the reservation. The outbox holds only the
# commands not applied yet; `strpos` keeps the JSON parse to the order's own rows.
REPLACES_IN_FLIGHT = """
SELECT o.id FROM unnest($1::uuid[]) AS o(id)
WHERE EXISTS (
    SELECT 1 FROM outbox b
    WHERE b.id <> ALL($2::bigint[])
      AND CASE WHEN strpos(b.payload, o.id::text) > 0
          THEN (b.payload::jsonb ->> 'order_id') = o.id::text
               AND (b.payload::jsonb ->> 'type') = 'replace'
          ELSE false END
)
"""

# The orders of the batch ($1-$16, time $17) and the outbox rows of its commands ($18):
# `updated` holds, per order, what its reservation released. The outbox rows go in the
# same statement (no other lock is involved: the relay skips locked rows, intake only
# inserts). So do the report outbox's (report_outbox.py): the batch's reports ($20, one
# JSON per line, NULL for none) are inserted as one row for the shard ($19), and the
# rows of the batches already published (ids $21-$22, NULL for none) deleted.
# The DELETE sees the statement's snapshot, never the rows the INSERT adds.
_ORDERS = """
u AS (
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
), gone AS (
    DELETE FROM outbox WHERE id = ANY($18::bigint[])
), reported AS (
    INSERT INTO report_outbox (shard, reports) SELECT $19::smallint, $20::text
    WHERE $20::text IS NOT NULL
    RETURNING id
), published AS (
    DELETE FROM report_outbox
    WHERE shard = $19::smallint AND id BETWEEN $21::bigint AND $22::bigint
), updated AS (
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
        old.reserved_amount - o.reserved_amount AS released_cash,
        old.reserved_quantity - o.reserved_quantity AS released_quantity
)"""

# A batch without trades, in one statement and so with no BEGIN/COMMIT: the orders,
# then the reservations they released, on the accounts (sorted) then the positions
# (sorted). Rows: (0, account, symbol, released cash, released shares) per order, then,
# last, (4, NULL, NULL, id, id) of the report_outbox row it inserted, if any. If
# fewer orders than given were found the statement fails (casting the message to int),
# as the transaction of a batch with trades does (nothing is written).
APPLY_WITHOUT_TRADES = f"""
WITH {_ORDERS}, released_cash AS (
    SELECT account_id, sum(released_cash) AS amount FROM updated
    WHERE released_cash <> 0 GROUP BY account_id
), released_quantity AS (
    SELECT account_id, symbol, sum(released_quantity) AS amount FROM updated
    WHERE released_quantity <> 0 GROUP BY account_id, symbol
), locked_accounts AS MATERIALIZED (
    SELECT id FROM account WHERE id = ANY(ARRAY(SELECT account_id FROM released_cash))
    ORDER BY id FOR NO KEY UPDATE
), locked_positions AS MATERIALIZED (
    SELECT p.account_id, p.symbol FROM position p
    WHERE (p.account_id, p.symbol) IN (SELECT account_id, symbol FROM released_quantity)
    ORDER BY p.account_id, p.symbol
    FOR NO KEY UPDATE OF p
), accounts AS (
    UPDATE account x SET
        reserved_cash = x.reserved_cash - r.amount,
        version = x.version + 1,
        updated_at = $17
    FROM locked_accounts l JOIN released_cash r ON r.account_id = l.id
    WHERE x.id = l.id
    RETURNING x.id
), positions AS (
    UPDATE position x SET
        reserved_quantity = x.reserved_quantity - r.amount,
        updated_at = $17
    FROM locked_positions l JOIN released_quantity r
        ON r.account_id = l.account_id AND r.symbol = l.symbol
    WHERE x.account_id = l.account_id AND x.symbol = l.symbol
    RETURNING x.account_id
), found AS (
    SELECT count(*) AS n FROM updated
)
SELECT 0, account_id, symbol, released_cash, released_quantity FROM updated
UNION ALL SELECT 1, id, NULL, NULL, NULL FROM accounts
UNION ALL SELECT 2, account_id, NULL, NULL, NULL FROM positions
UNION ALL SELECT 3, NULL, NULL, NULL, NULL FROM found
    WHERE CASE WHEN n = cardinality($1::uuid[]) THEN false
        ELSE ('updated ' || n || ' of ' || cardinality($1::uuid[]) || ' orders')::int IS NULL
    END
UNION ALL SELECT 4, NULL, NULL, min(id), max(id) FROM reported HAVING count(*) > 0
"""

# A batch with trades, first statement (in a transaction): the orders, then the rows
# settlement needs, locked: the accounts of the trades ($23) and of released cash, then
# the positions of the trades ($24, $25) and of released shares. Rows: kind 0 per order
# as above, kind 1 (account, cash) per account, kind 2 (account, symbol, quantity,
# avg_cost) per existing position, then kind 4 (id, id) of the report_outbox row it
# inserted, if any.
APPLY_AND_LOCK = f"""
WITH {_ORDERS}, locked_accounts AS MATERIALIZED (
    SELECT id, cash FROM account
    WHERE id = ANY(ARRAY(
        SELECT unnest($23::uuid[])
        UNION SELECT account_id FROM updated WHERE released_cash <> 0
    ))
    ORDER BY id FOR NO KEY UPDATE
), locked_positions AS MATERIALIZED (
    SELECT p.account_id, p.symbol, p.quantity, p.avg_cost FROM position p
    WHERE (p.account_id, p.symbol) IN (
        SELECT * FROM unnest($24::uuid[], $25::text[])
        UNION SELECT account_id, symbol FROM updated WHERE released_quantity <> 0
    )
    ORDER BY p.account_id, p.symbol
    FOR NO KEY UPDATE OF p
)
SELECT 0, account_id, symbol, released_cash, released_quantity,
    NULL::numeric, NULL::bigint, NULL::numeric FROM updated
UNION ALL SELECT 1, id, NULL, NULL, NULL, cash, NULL, NULL FROM locked_accounts
UNION ALL SELECT 2, account_id, symbol, NULL, NULL, NULL, quantity, avg_cost
    FROM locked_positions
UNION ALL SELECT 4, NULL, NULL, NULL, min(id), NULL, max(id), NULL
    FROM reported HAVING count(*) > 0
"""

# A batch with trades, second statement, once the rows are locked: everything else in
# one statement, its parts on rows this transaction already holds (or new ones). Ledger
# ids come from PostgreSQL (nothing refers to them); ledger rows and trades are inserted
# in trade order.
WRITE_SETTLEMENT = """
WITH trades AS (
    INSERT INTO trade (id, symbol, price, quantity, buy_order_id, sell_order_id,
                       buyer_account_id, seller_account_id, aggressor_side, created_at)
    SELECT id, symbol, price, quantity, buy_order_id, sell_order_id,
           buyer_account_id, seller_account_id, aggressor_side, $25
    FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::bigint[], $5::uuid[],
                $6::uuid[], $7::uuid[], $8::uuid[], $9::text[]) WITH ORDINALITY
        AS t(id, symbol, price, quantity, buy_order_id, sell_order_id,
             buyer_account_id, seller_account_id, aggressor_side, ord)
    ORDER BY ord
), ledger AS (
    INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after, reference_id,
                              created_at)
    SELECT gen_random_uuid(), account_id, kind, amount, balance_after, reference_id, $25
    FROM unnest($10::uuid[], $11::text[], $12::numeric[], $13::numeric[], $14::uuid[])
        WITH ORDINALITY AS e(account_id, kind, amount, balance_after, reference_id, ord)
    ORDER BY ord
), accounts AS (
    UPDATE account a SET
        cash = u.cash,
        reserved_cash = a.reserved_cash + u.reserved_delta,
        version = a.version + 1,
        updated_at = $25
    FROM unnest($15::uuid[], $16::numeric[], $17::numeric[]) AS u(id, cash, reserved_delta)
    WHERE a.id = u.id
), positions AS (
    UPDATE position p SET
        quantity = u.quantity,
        reserved_quantity = p.reserved_quantity + u.reserved_delta,
        avg_cost = u.avg_cost,
        updated_at = $25
    FROM unnest($18::uuid[], $19::text[], $20::bigint[], $21::bigint[], $22::numeric[])
        AS u(account_id, symbol, quantity, reserved_delta, avg_cost)
    WHERE p.account_id = u.account_id AND p.symbol = u.symbol
), new_positions AS (
    INSERT INTO position (account_id, symbol, quantity, reserved_quantity, avg_cost,
                          updated_at)
    SELECT account_id, symbol, quantity, 0, avg_cost, $25
    FROM unnest($26::uuid[], $27::text[], $28::bigint[], $29::numeric[])
        AS u(account_id, symbol, quantity, avg_cost)
)
UPDATE instrument i SET last_price = u.price, last_trade_at = $25
FROM unnest($23::text[], $24::numeric[]) AS u(symbol, price)
WHERE i.symbol = u.symbol
"""
