"""a replace request as one server-side call

`intake_replace_order(...)` writes a replace the api has already checked against the
order as it read it: it locks the order row, makes sure the order is still what was
checked (same version, still open, same fills and reservation — otherwise it answers
`stale` and the caller reads and checks again), tops up the reservation when the new
terms need more (the same guarded UPDATEs as `intake_place_orders`), and writes the
outbox row of the `replace` command. One autocommitted call replaces BEGIN, a locking
SELECT, up to two UPDATEs, the outbox INSERT and COMMIT (docs/performance.md).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = """
CREATE FUNCTION intake_replace_order(
    p_order uuid, p_account uuid, p_version integer, p_filled_quantity bigint,
    p_reserved_amount numeric, p_reserved_quantity bigint,
    p_extra_cash numeric, p_extra_shares bigint, p_stream text, p_payload text
) RETURNS TABLE (
    r_outcome text, r_outbox_id bigint, r_available numeric,
    r_reserved_amount numeric, r_reserved_quantity bigint
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v record;
BEGIN
    -- Order first, then the account or position: the engine's lock order. NO KEY UPDATE
    -- leaves the engine free to insert trades that reference the order.
    SELECT o.side, o.symbol, o.version, o.status, o.filled_quantity, o.reserved_amount,
           o.reserved_quantity
      INTO v FROM client_order o
     WHERE o.id = p_order AND o.account_id = p_account
       FOR NO KEY UPDATE;
    IF NOT FOUND OR v.version <> p_version OR v.filled_quantity <> p_filled_quantity
       OR v.reserved_amount <> p_reserved_amount OR v.reserved_quantity <> p_reserved_quantity
       OR v.status NOT IN ('pending_new', 'new', 'partially_filled') THEN
        r_outcome := 'stale';
        RETURN NEXT;
        RETURN;
    END IF;

    IF v.side = 'buy' AND p_extra_cash > 0 THEN
        UPDATE account a
           SET reserved_cash = a.reserved_cash + p_extra_cash, updated_at = now()
         WHERE a.id = p_account AND a.cash - a.reserved_cash >= p_extra_cash;
        IF NOT FOUND THEN
            SELECT a.cash - a.reserved_cash INTO r_available FROM account a
             WHERE a.id = p_account;
            r_available := coalesce(r_available, 0);
            r_outcome := 'insufficient_funds';
            RETURN NEXT;
            RETURN;
        END IF;
    ELSIF v.side = 'sell' AND p_extra_shares > 0 THEN
        UPDATE position p
           SET reserved_quantity = p.reserved_quantity + p_extra_shares, updated_at = now()
         WHERE p.account_id = p_account AND p.symbol = v.symbol
           AND p.quantity - p.reserved_quantity >= p_extra_shares;
        IF NOT FOUND THEN
            SELECT p.quantity - p.reserved_quantity INTO r_available FROM position p
             WHERE p.account_id = p_account AND p.symbol = v.symbol;
            r_available := coalesce(r_available, 0);
            r_outcome := 'insufficient_position';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    r_reserved_amount := v.reserved_amount;
    r_reserved_quantity := v.reserved_quantity;
    IF p_extra_cash > 0 OR p_extra_shares > 0 THEN
        UPDATE client_order o
           SET reserved_amount = o.reserved_amount + p_extra_cash,
               reserved_quantity = o.reserved_quantity + p_extra_shares,
               updated_at = now()
         WHERE o.id = p_order
        RETURNING o.reserved_amount, o.reserved_quantity
             INTO r_reserved_amount, r_reserved_quantity;
    END IF;

    INSERT INTO outbox (stream, payload) VALUES (p_stream, p_payload)
    RETURNING id INTO r_outbox_id;
    r_outcome := 'accepted';
    RETURN NEXT;
END
$$;
"""

SIGNATURE = (
    "intake_replace_order(uuid, uuid, integer, bigint, numeric, bigint, numeric, bigint,"
    " text, text)"
)


def upgrade() -> None:
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
