"""intake as one server-side call per batch of orders

`intake_place_orders(...)` writes a batch of already-checked orders: for each, in the
order given, the `client_order_id` replay lookup, the open-order cap, the guarded
reservation (cash for a buy, shares for a sell), the order row and its outbox row. A
refused order writes nothing and the next one goes on; the caller learns each outcome
from the rows returned. One round trip replaces four statements per order, and the api
sends many concurrent requests' orders in one call (group commit, docs/performance.md).

The pre-trade checks that need only the instrument row (tick, band, hours, halt) and
the size of the reservation stay in Python (`brokerx_core.intake.pretrade`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 06:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION intake_place_orders(
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
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_id, 1), 0) LOOP
        r_index := i - 1;
        r_order_id := NULL;
        r_outbox_id := NULL;
        r_available := NULL;
        r_created_at := NULL;

        -- The same client_order_id again: answer with the order it placed.
        IF p_client_order_id[i] IS NOT NULL THEN
            SELECT o.id INTO r_order_id FROM client_order o
             WHERE o.account_id = p_account[i] AND o.client_order_id = p_client_order_id[i];
            IF FOUND THEN
                r_outcome := 'replay';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;

        -- The count stops at the cap: a busy account never scans all its open orders.
        SELECT count(*) INTO v_open FROM (
            SELECT 1 FROM client_order o
             WHERE o.account_id = p_account[i]
               AND o.status IN ('pending_new', 'new', 'partially_filled')
             LIMIT p_cap[i]) open_orders;
        IF v_open >= p_cap[i] THEN
            r_outcome := 'too_many_open_orders';
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF p_side[i] = 'buy' AND p_reserved_amount[i] > 0 THEN
            UPDATE account a
               SET reserved_cash = a.reserved_cash + p_reserved_amount[i], updated_at = now()
             WHERE a.id = p_account[i] AND a.cash - a.reserved_cash >= p_reserved_amount[i];
            IF NOT FOUND THEN
                SELECT a.cash - a.reserved_cash INTO r_available FROM account a
                 WHERE a.id = p_account[i];
                r_available := coalesce(r_available, 0);
                r_outcome := 'insufficient_funds';
                RETURN NEXT;
                CONTINUE;
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
                RETURN NEXT;
                CONTINUE;
            END IF;
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
            -- A concurrent request with this client_order_id committed first: give the
            -- reservation back and answer with its order.
            IF p_side[i] = 'buy' AND p_reserved_amount[i] > 0 THEN
                UPDATE account a
                   SET reserved_cash = a.reserved_cash - p_reserved_amount[i]
                 WHERE a.id = p_account[i];
            ELSIF p_side[i] = 'sell' AND p_reserved_quantity[i] > 0 THEN
                UPDATE position p
                   SET reserved_quantity = p.reserved_quantity - p_reserved_quantity[i]
                 WHERE p.account_id = p_account[i] AND p.symbol = p_symbol[i];
            END IF;
            SELECT o.id INTO r_order_id FROM client_order o
             WHERE o.account_id = p_account[i] AND o.client_order_id = p_client_order_id[i];
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

SIGNATURE = (
    "intake_place_orders(uuid[], uuid[], text[], text[], text[], text[], bigint[], numeric[],"
    " text[], numeric[], bigint[], numeric[], text[], text[], text[], text[], integer[])"
)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
