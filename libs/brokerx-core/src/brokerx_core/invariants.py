"""DESIGN.md's invariants checked against the database (`python -m brokerx_core.invariants`).

`find_violations` returns every violation it finds (empty list = all hold). Tests,
benchmarks, chaos runs and `make restore` call it after every run. Invariant 6
(nothing stays `pending_new`) is checked when `pending_grace_seconds` is given
(`--pending-grace` on the command line), for callers that know the engines are running.

Some checks restate a CHECK constraint of the schema (reservations within cash and
quantity, status against fills): the checker must not depend on the schema it audits
(a restore into a hand-made database, a migration that dropped one).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from brokerx_core.db.session import create_engine
from brokerx_core.settings import BrokerXSettings

OPEN = "('pending_new', 'new', 'partially_filled')"
TERMINAL = "('filled', 'canceled', 'expired', 'rejected')"
# A trade's notional rounded half-even to the cent, as `brokerx_core.money.cash` does
# (PostgreSQL's round() on numeric rounds halves away from zero).
NOTIONAL = (
    "(CASE WHEN t.price * t.quantity * 100 - trunc(t.price * t.quantity * 100) = 0.5"
    " AND mod(trunc(t.price * t.quantity * 100), 2) = 0"
    " THEN trunc(t.price * t.quantity * 100) / 100"
    " ELSE round(t.price * t.quantity, 2) END)"
)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    subject: str
    detail: str


# (invariant, query returning rows of (subject, detail))
CHECKS: tuple[tuple[str, str], ...] = (
    (
        "1: cash = sum of ledger entries",
        "SELECT a.id::text, 'cash=' || a.cash || ' ledger=' || COALESCE(SUM(l.amount), 0)"
        " FROM account a LEFT JOIN ledger_entry l ON l.account_id = a.id"
        " GROUP BY a.id, a.cash HAVING a.cash <> COALESCE(SUM(l.amount), 0)",
    ),
    (
        # Implied by the next check and the one above, but names the account at once.
        "1: last balance_after = cash",
        "SELECT a.id::text, 'cash=' || a.cash || ' last balance_after=' || l.balance_after"
        " FROM account a JOIN LATERAL (SELECT balance_after FROM ledger_entry"
        "   WHERE account_id = a.id ORDER BY seq DESC LIMIT 1) l ON true"
        " WHERE l.balance_after <> a.cash",
    ),
    (
        # The sum and the last balance can agree while a middle entry lies; every
        # balance_after must be the running sum of the account's entries in seq order.
        "1: balance_after = running sum of entries",
        "SELECT id::text, 'balance_after=' || balance_after || ' running sum=' || running"
        " FROM (SELECT id, balance_after, SUM(amount) OVER (PARTITION BY account_id"
        "   ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) running"
        "   FROM ledger_entry) l"
        " WHERE balance_after <> running",
    ),
    (
        "1: 0 <= reserved_cash <= cash",
        "SELECT id::text, 'cash=' || cash || ' reserved=' || reserved_cash FROM account"
        " WHERE reserved_cash < 0 OR reserved_cash > cash OR cash < 0",
    ),
    (
        "1: reserved_cash = reservations of open buy orders",
        "SELECT a.id::text, 'reserved=' || a.reserved_cash || ' orders=' || COALESCE(o.s, 0)"
        " FROM account a LEFT JOIN (SELECT account_id, SUM(reserved_amount) s FROM client_order"
        f"   WHERE side = 'buy' AND status IN {OPEN} GROUP BY account_id) o"
        "   ON o.account_id = a.id"
        " WHERE a.reserved_cash <> COALESCE(o.s, 0)",
    ),
    (
        "2: 0 <= reserved_qty <= qty",
        "SELECT account_id::text || '/' || symbol, 'qty=' || quantity || ' reserved='"
        " || reserved_quantity FROM position"
        " WHERE quantity < 0 OR reserved_quantity < 0 OR reserved_quantity > quantity",
    ),
    (
        "2: qty = grants + bought - sold",
        "WITH moves AS ("
        "  SELECT account_id, symbol, quantity q FROM share_grant"
        "  UNION ALL SELECT buyer_account_id, symbol, quantity FROM trade"
        "  UNION ALL SELECT seller_account_id, symbol, -quantity FROM trade),"
        " expected AS (SELECT account_id, symbol, SUM(q) q FROM moves GROUP BY 1, 2)"
        " SELECT COALESCE(p.account_id, e.account_id)::text || '/' || COALESCE(p.symbol, e.symbol),"
        "  'position=' || COALESCE(p.quantity, 0) || ' fills=' || COALESCE(e.q, 0)"
        " FROM position p FULL JOIN expected e"
        "  ON e.account_id = p.account_id AND e.symbol = p.symbol"
        " WHERE COALESCE(p.quantity, 0) <> COALESCE(e.q, 0)",
    ),
    (
        "2: reserved_qty = reservations of open sell orders",
        # FULL JOIN: shares reserved by open sells of a position that does not exist too.
        "SELECT COALESCE(p.account_id, o.account_id)::text || '/' || COALESCE(p.symbol, o.symbol),"
        "  'reserved=' || COALESCE(p.reserved_quantity, 0) || ' orders=' || COALESCE(o.s, 0)"
        " FROM position p FULL JOIN (SELECT account_id, symbol, SUM(reserved_quantity) s"
        f"   FROM client_order WHERE side = 'sell' AND status IN {OPEN} GROUP BY 1, 2) o"
        "   ON o.account_id = p.account_id AND o.symbol = p.symbol"
        " WHERE COALESCE(p.reserved_quantity, 0) <> COALESCE(o.s, 0)",
    ),
    (
        # Only deposits and withdrawals bring money in or take it out. A fee is not
        # external: it moves cash from a client to the house (fee) account, both legs in
        # the ledger, so a fee entry without its counterpart changes the total.
        "3: total cash = deposits - withdrawals",
        "SELECT 'all accounts', 'cash=' || c.total || ' external=' || e.total"
        " FROM (SELECT COALESCE(SUM(cash), 0) total FROM account) c,"
        "  (SELECT COALESCE(SUM(amount), 0) total FROM ledger_entry"
        "   WHERE kind IN ('deposit', 'withdrawal')) e"
        " WHERE c.total <> e.total",
    ),
    (
        "3: each fee moves money between accounts",
        "SELECT reference_id::text, 'fee entries sum=' || SUM(amount)"
        "  || ' over ' || count(DISTINCT account_id) || ' account(s)'"
        " FROM ledger_entry WHERE kind = 'fee' GROUP BY reference_id"
        " HAVING SUM(amount) <> 0 OR count(DISTINCT account_id) < 2",
    ),
    (
        # Otherwise a credit labelled "withdrawal" would pass as external money.
        "3: withdrawal entries are debits",
        "SELECT id::text, 'withdrawal amount=' || amount FROM ledger_entry"
        " WHERE kind = 'withdrawal' AND amount > 0",
    ),
    (
        "3: shares of a symbol = seeded shares",
        "SELECT p.symbol, 'positions=' || p.total || ' seeded=' || COALESCE(g.total, 0)"
        " FROM (SELECT symbol, SUM(quantity) total FROM position GROUP BY symbol) p"
        " LEFT JOIN (SELECT symbol, SUM(quantity) total FROM share_grant GROUP BY symbol) g"
        "  ON g.symbol = p.symbol WHERE p.total <> COALESCE(g.total, 0)",
    ),
    (
        "3: each trade moves price x qty between two accounts",
        f"SELECT t.id::text, 'notional=' || {NOTIONAL}"
        "  || ' buyer=' || COALESCE(b.amount::text, 'missing')"
        "  || ' seller=' || COALESCE(s.amount::text, 'missing')"
        " FROM trade t"
        " LEFT JOIN ledger_entry b ON b.reference_id = t.id AND b.kind = 'buy'"
        "  AND b.account_id = t.buyer_account_id"
        " LEFT JOIN ledger_entry s ON s.reference_id = t.id AND s.kind = 'sell'"
        "  AND s.account_id = t.seller_account_id"
        " WHERE t.buyer_account_id = t.seller_account_id"
        "  OR b.amount IS NULL OR s.amount IS NULL"
        f"  OR b.amount <> -{NOTIONAL}"
        f"  OR s.amount <> {NOTIONAL}",
    ),
    (
        "3: every trade ledger entry belongs to its trade's buyer or seller",
        "SELECT l.id::text, l.kind || ' entry of account ' || l.account_id || CASE"
        "  WHEN t.id IS NULL THEN ' references no trade'"
        "  ELSE ' is not the trade''s ' || CASE l.kind WHEN 'buy' THEN 'buyer' ELSE 'seller' END"
        "  END"
        " FROM ledger_entry l LEFT JOIN trade t ON t.id = l.reference_id"
        " WHERE l.kind IN ('buy', 'sell') AND (t.id IS NULL"
        "  OR (l.kind = 'buy' AND l.account_id <> t.buyer_account_id)"
        "  OR (l.kind = 'sell' AND l.account_id <> t.seller_account_id))",
    ),
    (
        # Cash enters only by deposits: each deposit entry is one settled deposit of the
        # same account and amount, and each deposit has its entry.
        "3: deposit entries = deposits",
        "SELECT COALESCE(l.reference_id, d.id)::text,"
        "  'entry=' || COALESCE(l.amount::text, 'missing')"
        "  || ' deposit=' || COALESCE(d.amount::text, 'missing')"
        " FROM (SELECT * FROM ledger_entry WHERE kind = 'deposit') l"
        " FULL JOIN deposit d ON d.id = l.reference_id"
        " WHERE l.id IS NULL OR d.id IS NULL OR l.account_id <> d.account_id"
        "  OR l.amount <> d.amount OR d.status <> 'settled'",
    ),
    (
        "4: filled_qty = sum of fills <= quantity",
        "SELECT o.id::text, 'filled=' || o.filled_quantity || ' fills=' || COALESCE(f.q, 0)"
        "  || ' quantity=' || o.quantity"
        " FROM client_order o LEFT JOIN ("
        "  SELECT order_id, SUM(quantity) q FROM ("
        "   SELECT buy_order_id order_id, quantity FROM trade"
        "   UNION ALL SELECT sell_order_id, quantity FROM trade) x GROUP BY order_id) f"
        "  ON f.order_id = o.id"
        " WHERE o.filled_quantity <> COALESCE(f.q, 0) OR o.filled_quantity > o.quantity",
    ),
    (
        "4: terminal order holds no reservation",
        "SELECT id::text, status || ' reserved_amount=' || reserved_amount"
        "  || ' reserved_quantity=' || reserved_quantity FROM client_order"
        f" WHERE status IN {TERMINAL} AND (reserved_amount <> 0 OR reserved_quantity <> 0)",
    ),
    (
        "4: status agrees with filled_qty",
        "SELECT id::text, status || ' filled=' || filled_quantity || '/' || quantity"
        # Filled exactly when fully filled: a canceled/expired/rejected order with
        # nothing left is as wrong as a `filled` one with something left.
        " FROM client_order WHERE (status = 'filled') <> (filled_quantity = quantity)"
        "  OR (status IN ('pending_new', 'new') AND filled_quantity <> 0)"
        "  OR (status = 'partially_filled' AND filled_quantity = 0)",
    ),
    (
        "5: book not crossed",
        "SELECT b.symbol, 'best bid=' || b.p || ' best ask=' || a.p"
        " FROM (SELECT symbol, MAX(limit_price) p FROM client_order WHERE side = 'buy'"
        "   AND status IN ('new', 'partially_filled') AND type = 'limit' GROUP BY symbol) b"
        " JOIN (SELECT symbol, MIN(limit_price) p FROM client_order WHERE side = 'sell'"
        "   AND status IN ('new', 'partially_filled') AND type = 'limit' GROUP BY symbol) a"
        "  ON a.symbol = b.symbol WHERE b.p >= a.p",
    ),
)

PENDING_CHECK = (
    "6: no order stays pending_new",
    "SELECT id::text, 'pending_new since ' || created_at FROM client_order"
    " WHERE status = 'pending_new' AND created_at < now() - make_interval(secs => :grace)",
)


async def find_violations_on(
    conn: AsyncConnection, *, pending_grace_seconds: float | None = None
) -> list[Violation]:
    """Run every check on one connection (one snapshot when in REPEATABLE READ)."""
    violations: list[Violation] = []
    checks: list[tuple[str, str]] = list(CHECKS)
    if pending_grace_seconds is not None:
        checks.append(PENDING_CHECK)
    for name, query in checks:
        params = {"grace": pending_grace_seconds} if name.startswith("6") else {}
        for subject, detail in (await conn.execute(text(query), params)).all():
            violations.append(Violation(name, str(subject), str(detail)))
    return violations


async def find_violations(
    engine: AsyncEngine, *, pending_grace_seconds: float | None = None
) -> list[Violation]:
    """Every invariant violation in the database, read from one consistent snapshot."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await find_violations_on(conn, pending_grace_seconds=pending_grace_seconds)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m brokerx_core.invariants",
        description="Check DESIGN.md's invariants against DATABASE_URL (exit 1 on a violation).",
    )
    parser.add_argument(
        "--pending-grace",
        type=float,
        metavar="SECONDS",
        help="also check invariant 6: no order pending_new for longer than this (only"
        " while the matching service runs; a restored backup legitimately has some)",
    )
    return parser.parse_args(argv)


async def _main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    settings = BrokerXSettings()
    engine = create_engine(settings, pool_size=1)
    try:
        violations = await find_violations(engine, pending_grace_seconds=arguments.pending_grace)
    finally:
        await engine.dispose()
    for violation in violations:
        print(f"VIOLATION [{violation.invariant}] {violation.subject}: {violation.detail}")  # noqa: T201
    print(f"invariants: {len(violations)} violation(s)")  # noqa: T201
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
