"""intake of a large batch in a few statements, whatever its size

`intake_place_orders` (0003) ran four or five statements per order: the
`client_order_id` lookup, the open-order count, the guarded reservation UPDATE, the
order INSERT and the outbox INSERT. A profile of PostgreSQL under the closed-loop
benchmark (perf, 2026-11-24) showed per-statement cost dominating: an executor started
for each and, for every INSERT or UPDATE of `client_order` and `account`, their CHECK
constraints parsed anew from text (`ExecConstraints` → `stringToNode`, 13 % of
PostgreSQL's CPU on its own).

`intake_place_batch` gives every order the outcome `intake_place_orders` gives it, in
order, with:

1. one statement that locks the batch's accounts (by id, the engine's lock order, one
   primary-key lookup each) and reads their free cash and open orders (counted up to the
   largest cap asked for); one more for the positions sells draw shares from (by
   account, symbol), and one for earlier `client_order_id`s, each only when the batch
   has some;
2. the checks, order by order in the order given, in memory: an order sees what the
   earlier orders of the batch reserved, counts their open orders and replays their
   `client_order_id`;
3. one statement that writes everything: the accounts' and positions' reservations, the
   orders (`ON CONFLICT DO NOTHING`: a concurrent request with the same
   `client_order_id` that committed first wins, as before; the loser gives its
   reservation back and answers `replay`) and their outbox rows, numbered in the
   orders' order.

The caller passes the batch's layout (each order's account slot, position slot and the
batch's first order with the same `client_order_id`, and per slot the account, its cap,
the position; slots numbered in lock order), which it knows already
(`brokerx_core.intake.prepared.batch_layout`).
It locks every account of the batch, sells' too: the write statement runs right after.

Each statement costs more to plan and start than the per-order function's small ones,
so the api calls this function for batches of `SET_BASED_FROM` (8) orders or more and
keeps 0003's for smaller ones (measured per call on PostgreSQL 15: 1 order 350 µs with
0003 against 790 µs here, 8 orders about even, 32 orders 5,020 against 2,850 µs). The
downgrade drops the new function.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 14:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION intake_place_batch(
    p_id uuid[], p_account uuid[], p_client_order_id text[], p_symbol text[], p_side text[],
    p_type text[], p_quantity bigint[], p_limit_price numeric[], p_time_in_force text[],
    p_reserved_amount numeric[], p_reserved_quantity bigint[], p_reservation_price numeric[],
    p_request_hash text[], p_correlation_id text[], p_stream text[], p_payload text[],
    p_cap integer[],
    -- the layout: per order
    p_account_slot integer[], p_position_slot integer[], p_key_first integer[],
    -- per account slot, per position slot
    p_accounts uuid[], p_account_caps integer[],
    p_position_accounts uuid[], p_position_symbols text[]
) RETURNS TABLE (
    r_index integer, r_outcome text, r_order_id uuid, r_outbox_id bigint,
    r_available numeric, r_created_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := coalesce(array_length(p_id, 1), 0);
    k integer;
    j integer;
    v_slot integer;
    v_position integer;
    v_first integer;
    v_found uuid;
    v_row record;
    v_outbox_ids regclass := pg_get_serial_sequence('outbox', 'id')::regclass;
    -- per order
    v_accepted boolean[];
    v_outcome text[];
    v_order_id uuid[];
    v_available numeric[];
    v_created timestamptz[];
    v_outbox bigint[];
    v_accepted_count integer := 0;
    v_inserted_count integer := 0;
    -- per order, at the index of the batch's first order with its client_order_id:
    -- the order of the batch that holds that id
    v_key_owner integer[];
    -- per account slot
    v_open integer[];
    v_free_cash numeric[];
    v_add_cash numeric[];
    -- per position slot
    v_free_shares bigint[];
    v_add_shares bigint[];
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    v_accepted := array_fill(false, ARRAY[n]);
    v_outcome := array_fill(NULL::text, ARRAY[n]);
    v_order_id := array_fill(NULL::uuid, ARRAY[n]);
    v_available := array_fill(NULL::numeric, ARRAY[n]);
    v_created := array_fill(NULL::timestamptz, ARRAY[n]);
    v_outbox := array_fill(NULL::bigint, ARRAY[n]);
    v_key_owner := array_fill(NULL::integer, ARRAY[n]);
    v_open := array_fill(0, ARRAY[cardinality(p_accounts)]);
    v_free_cash := array_fill(NULL::numeric, ARRAY[cardinality(p_accounts)]);
    v_add_cash := array_fill(0::numeric, ARRAY[cardinality(p_accounts)]);
    v_free_shares := array_fill(NULL::bigint, ARRAY[cardinality(p_position_accounts)]);
    v_add_shares := array_fill(0::bigint, ARRAY[cardinality(p_position_accounts)]);

    -- 1. What the checks need. client_order_ids placed before this batch: replays.
    IF cardinality(array_remove(p_key_first, NULL)) > 0 THEN
        FOR v_row IN
            SELECT t.i, o.id
              FROM unnest(p_account, p_client_order_id) WITH ORDINALITY AS t(a, c, i)
              JOIN client_order o ON o.account_id = t.a AND o.client_order_id = t.c
        LOOP
            v_order_id[v_row.i] := v_row.id;
        END LOOP;
    END IF;
    -- The accounts, locked one by one in the order given (the engine's lock order: the
    -- caller sorts them), each through its primary key: a join could scan the whole
    -- table, dead row versions included. The count of open orders stops at the cap (a
    -- busy account never scans all its open orders).
    FOR v_row IN
        SELECT s.slot, a.free, a.open_orders
          FROM unnest(p_accounts, p_account_caps) WITH ORDINALITY AS s(id, cap, slot)
          CROSS JOIN LATERAL (
              SELECT ac.cash - ac.reserved_cash AS free,
                     (SELECT count(*) FROM (
                          SELECT 1 FROM client_order o
                           WHERE o.account_id = ac.id
                             AND o.status IN ('pending_new', 'new', 'partially_filled')
                           LIMIT s.cap) open_orders)::integer AS open_orders
                FROM account ac
               WHERE ac.id = s.id
                 FOR NO KEY UPDATE) a
    LOOP
        v_free_cash[v_row.slot] := v_row.free;
        v_open[v_row.slot] := v_row.open_orders;
    END LOOP;
    -- Then the positions sells draw shares from, the same way.
    IF cardinality(p_position_accounts) > 0 THEN
        FOR v_row IN
            SELECT s.slot, q.free
              FROM unnest(p_position_accounts, p_position_symbols) WITH ORDINALITY
                   AS s(a, sym, slot)
              CROSS JOIN LATERAL (
                  SELECT p.quantity - p.reserved_quantity AS free
                    FROM position p
                   WHERE p.account_id = s.a AND p.symbol = s.sym
                     FOR NO KEY UPDATE) q
        LOOP
            v_free_shares[v_row.slot] := v_row.free;
        END LOOP;
    END IF;

    -- 2. The checks, order by order, in memory.
    FOR k IN 1 .. n LOOP
        v_first := p_key_first[k];
        IF v_order_id[k] IS NOT NULL THEN
            v_outcome[k] := 'replay';
            CONTINUE;
        END IF;
        IF v_first IS NOT NULL AND v_key_owner[v_first] IS NOT NULL THEN
            v_order_id[k] := p_id[v_key_owner[v_first]];
            v_outcome[k] := 'replay';
            CONTINUE;
        END IF;
        v_slot := p_account_slot[k];
        IF v_open[v_slot] >= p_cap[k] THEN
            v_outcome[k] := 'too_many_open_orders';
            CONTINUE;
        END IF;
        v_position := p_position_slot[k];
        IF p_side[k] = 'buy' AND p_reserved_amount[k] > 0 THEN
            IF coalesce(v_free_cash[v_slot], 0) < p_reserved_amount[k] THEN
                v_available[k] := coalesce(v_free_cash[v_slot], 0);
                v_outcome[k] := 'insufficient_funds';
                CONTINUE;
            END IF;
            v_free_cash[v_slot] := v_free_cash[v_slot] - p_reserved_amount[k];
            v_add_cash[v_slot] := v_add_cash[v_slot] + p_reserved_amount[k];
        ELSIF v_position IS NOT NULL THEN
            IF coalesce(v_free_shares[v_position], 0) < p_reserved_quantity[k] THEN
                v_available[k] := coalesce(v_free_shares[v_position], 0);
                v_outcome[k] := 'insufficient_position';
                CONTINUE;
            END IF;
            v_free_shares[v_position] := v_free_shares[v_position] - p_reserved_quantity[k];
            v_add_shares[v_position] := v_add_shares[v_position] + p_reserved_quantity[k];
        END IF;
        v_open[v_slot] := v_open[v_slot] + 1;
        IF v_first IS NOT NULL THEN
            v_key_owner[v_first] := k;
        END IF;
        v_accepted[k] := true;
        v_accepted_count := v_accepted_count + 1;
        v_order_id[k] := p_id[k];
        v_outcome[k] := 'accepted';
    END LOOP;

    -- 3. The writes, in one statement.
    IF v_accepted_count > 0 THEN
        FOR v_row IN
            WITH cash AS (
                UPDATE account ac
                   SET reserved_cash = ac.reserved_cash + d.amount, updated_at = now()
                  FROM unnest(p_accounts, v_add_cash) AS d(id, amount)
                 WHERE ac.id = d.id AND d.amount > 0
            ), shares AS (
                UPDATE position p
                   SET reserved_quantity = p.reserved_quantity + d.quantity,
                       updated_at = now()
                  FROM unnest(p_position_accounts, p_position_symbols, v_add_shares)
                       AS d(a, sym, quantity)
                 WHERE p.account_id = d.a AND p.symbol = d.sym AND d.quantity > 0
            ), inserted AS (
                INSERT INTO client_order AS o (
                    id, account_id, client_order_id, symbol, side, type, quantity,
                    limit_price, time_in_force, status, reserved_amount, reserved_quantity,
                    reservation_price, version, request_hash, correlation_id)
                SELECT t.id, t.a, t.c, t.sym, t.side, t.type, t.quantity, t.price, t.tif,
                       'pending_new', t.cash, t.shares, t.reservation_price, 1, t.hash, t.cid
                  FROM unnest(p_id, p_account, p_client_order_id, p_symbol, p_side, p_type,
                              p_quantity, p_limit_price, p_time_in_force, p_reserved_amount,
                              p_reserved_quantity, p_reservation_price, p_request_hash,
                              p_correlation_id)
                       WITH ORDINALITY AS t(id, a, c, sym, side, type, quantity, price, tif,
                                            cash, shares, reservation_price, hash, cid, i)
                 WHERE v_accepted[t.i]
                 ORDER BY t.i
                ON CONFLICT (account_id, client_order_id) DO NOTHING
                RETURNING o.id, o.created_at
            ), numbered AS MATERIALIZED (
                SELECT t.i, inserted.created_at, nextval(v_outbox_ids) AS outbox_id
                  FROM inserted JOIN unnest(p_id) WITH ORDINALITY AS t(id, i)
                    ON t.id = inserted.id
                 ORDER BY t.i
            ), written AS (
                INSERT INTO outbox (id, stream, payload)
                SELECT numbered.outbox_id, p_stream[numbered.i], p_payload[numbered.i]
                  FROM numbered
            )
            SELECT numbered.i, numbered.created_at, numbered.outbox_id FROM numbered
        LOOP
            v_created[v_row.i] := v_row.created_at;
            v_outbox[v_row.i] := v_row.outbox_id;
            v_inserted_count := v_inserted_count + 1;
        END LOOP;
    END IF;

    IF v_inserted_count < v_accepted_count THEN
        -- A concurrent request with the same client_order_id committed first: give the
        -- reservation back and answer with its order (so do this batch's later orders
        -- that replayed this one).
        FOR k IN 1 .. n LOOP
            CONTINUE WHEN NOT v_accepted[k] OR v_created[k] IS NOT NULL;
            IF p_side[k] = 'buy' AND p_reserved_amount[k] > 0 THEN
                UPDATE account ac SET reserved_cash = ac.reserved_cash - p_reserved_amount[k]
                 WHERE ac.id = p_account[k];
            ELSIF p_position_slot[k] IS NOT NULL THEN
                UPDATE position p
                   SET reserved_quantity = p.reserved_quantity - p_reserved_quantity[k]
                 WHERE p.account_id = p_account[k] AND p.symbol = p_symbol[k];
            END IF;
            SELECT o.id INTO v_found FROM client_order o
             WHERE o.account_id = p_account[k] AND o.client_order_id = p_client_order_id[k];
            FOR j IN k .. n LOOP
                IF v_order_id[j] = p_id[k] THEN
                    v_order_id[j] := v_found;
                    v_outcome[j] := 'replay';
                END IF;
            END LOOP;
        END LOOP;
    END IF;

    FOR k IN 1 .. n LOOP
        r_index := k - 1;
        r_outcome := v_outcome[k];
        r_order_id := v_order_id[k];
        r_outbox_id := v_outbox[k];
        r_available := v_available[k];
        r_created_at := v_created[k];
        RETURN NEXT;
    END LOOP;
END
$$;
"""

SIGNATURE = (
    "intake_place_batch(uuid[], uuid[], text[], text[], text[], text[], bigint[], numeric[],"
    " text[], numeric[], bigint[], numeric[], text[], text[], text[], text[], integer[],"
    " integer[], integer[], integer[], uuid[], integer[], uuid[], text[])"
)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
