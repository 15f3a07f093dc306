"""`intake_place_orders` looks an earlier `client_order_id` up only when it needs to

0003's per-order function (batches of fewer than `SET_BASED_FROM` orders) began every
order with a lookup of its `client_order_id`. PL/pgSQL caches that statement's plan per
connection, and after five calls a generic one. Made while `client_order` was nearly
empty (a new database, until autovacuum first analyzes the table), the generic plan
found the account's orders through `ix_client_order_account_id_created_at` and filtered
them, instead of probing `uq_client_order_account_id_client_order_id`: 3.4 ms a lookup
once the account had 20,000 orders (`tests/integration/test_intake_lookup_on_refusal.py`).
0009 fixed the same hazard in the set-based function only.

An accepted order no longer runs the lookup at all. A retry is recognised by the order
INSERT's `ON CONFLICT` arbiter, which always uses the unique index (it is chosen by
inference, not planned): the function gives the reservation back and answers `replay`,
as it already did for a concurrent request that committed first. An order a check
refuses (open-order cap, cash, shares) is looked up before it is refused, so a retry
still gets its order back after the account's state moved on. Those lookups are rare,
and run through EXECUTE: planned for their arguments each time.

The outcomes are the same for every order; a retry now takes and gives back its
reservation (the account or position row is locked meanwhile, in the lock order the
caller already follows). One statement fewer per accepted order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 23:30:00
"""

from collections.abc import Sequence

from alembic import op

from brokerx_core.migrate import earlier_function

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE OR REPLACE FUNCTION intake_place_orders(
    p_id uuid[], p_account uuid[], p_client_order_id text[], p_symbol text[], p_side text[],
    p_type text[], p_quantity bigint[], p_limit_price numeric[], p_time_in_force text[],
    p_reserved_amount numeric[], p_reserved_quantity bigint[], p_reservation_price numeric[],
    p_request_hash text[], p_correlation_id text[], p_stream text[], p_payload text[],
    p_cap integer[]
) RETURNS TABLE (
    r_index integer, r_outcome text, r_order_id uuid, r_outbox_id bigint,
    r_available numeric, r_created_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    i integer;
    v_open integer;
    -- EXECUTE: planned for its arguments (a cached generic plan may filter an index: 0010).
    c_lookup constant text :=
        'SELECT o.id FROM client_order o WHERE o.account_id = $1 AND o.client_order_id = $2';
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
        r_index := i - 1;
        r_outcome := NULL;
        r_order_id := NULL;
        r_outbox_id := NULL;
        r_available := NULL;
        r_created_at := NULL;

        -- The count stops at the cap: a busy account never scans all its open orders.
        SELECT count(*) INTO v_open FROM (
            SELECT 1 FROM client_order o
             WHERE o.account_id = p_account[i]
               AND o.status IN ('pending_new', 'new', 'partially_filled')
             LIMIT p_cap[i]) open_orders;
        IF v_open >= p_cap[i] THEN
            r_outcome := 'too_many_open_orders';
        ELSIF p_side[i] = 'buy' AND p_reserved_amount[i] > 0 THEN
            UPDATE account a
               SET reserved_cash = a.reserved_cash + p_reserved_amount[i], updated_at = now()
             WHERE a.id = p_account[i] AND a.cash - a.reserved_cash >= p_reserved_amount[i];
            IF NOT FOUND THEN
                SELECT a.cash - a.reserved_cash INTO r_available FROM account a
                 WHERE a.id = p_account[i];
                r_available := coalesce(r_available, 0);
                r_outcome := 'insufficient_funds';
            END IF;
        ELSIF p_side[i] = 'sell' AND p_reserved_quantity[i] > 0 THEN
            UPDATE position p
               SET reserved_quantity = p.reserved_quantity + p_reserved_quantity[i],
                   updated_at = now()
             WHERE p.account_id = p_account[i] AND p.symbol = p_symbol[i]
               AND p.quantity - p.reserved_quantity >= p_reserved_quantity[i];
            IF NOT FOUND THEN
                SELECT p.quantity - p.reserved_quantity INTO r_available FROM position p
                 WHERE p.account_id = p_account[i] AND p.symbol = p_symbol[i];
                r_available := coalesce(r_available, 0);
                r_outcome := 'insufficient_position';
            END IF;
        END IF;

        IF r_outcome IS NOT NULL THEN
            -- Refused, unless it is a retry of an order placed before: answer with it.
            IF p_client_order_id[i] IS NOT NULL THEN
                EXECUTE c_lookup INTO r_order_id USING p_account[i], p_client_order_id[i];
                IF r_order_id IS NOT NULL THEN
                    r_outcome := 'replay';
                    r_available := NULL;
                END IF;
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        INSERT INTO client_order AS o (
            id, account_id, client_order_id, symbol, side, type, quantity, limit_price,
            time_in_force, status, reserved_amount, reserved_quantity, reservation_price,
            version, request_hash, correlation_id)
        VALUES (
            p_id[i], p_account[i], p_client_order_id[i], p_symbol[i], p_side[i], p_type[i],
            p_quantity[i], p_limit_price[i], p_time_in_force[i], 'pending_new',
            p_reserved_amount[i], p_reserved_quantity[i], p_reservation_price[i], 1,
            p_request_hash[i], p_correlation_id[i])
        ON CONFLICT (account_id, client_order_id) DO NOTHING
        RETURNING o.created_at INTO r_created_at;

        IF NOT FOUND THEN
            -- This client_order_id placed an order before (a retry, or a concurrent
            -- request that committed first): give the reservation back, answer with it.
            IF p_side[i] = 'buy' AND p_reserved_amount[i] > 0 THEN
                UPDATE account a
                   SET reserved_cash = a.reserved_cash - p_reserved_amount[i]
                 WHERE a.id = p_account[i];
            ELSIF p_side[i] = 'sell' AND p_reserved_quantity[i] > 0 THEN
                UPDATE position p
                   SET reserved_quantity = p.reserved_quantity - p_reserved_quantity[i]
                 WHERE p.account_id = p_account[i] AND p.symbol = p_symbol[i];
            END IF;
            EXECUTE c_lookup INTO r_order_id USING p_account[i], p_client_order_id[i];
            r_outcome := 'replay';
            RETURN NEXT;
            CONTINUE;
        END IF;

        INSERT INTO outbox (stream, payload) VALUES (p_stream[i], p_payload[i])
        RETURNING id INTO r_outbox_id;
        r_order_id := p_id[i];
        r_outcome := 'accepted';
        RETURN NEXT;
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(earlier_function("0003_intake_function.py"))
