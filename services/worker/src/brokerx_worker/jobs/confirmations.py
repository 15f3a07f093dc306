"""Which execution reports get a confirmation e-mail, and its content — for a whole batch.

One query per batch finds every owner (e-mail, first name, preference, market-maker
flag) and, only for owners who get e-mails, the terms of the order. Reports of owners
who turned confirmations off, of the market maker or of unknown clients get no e-mail.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from brokerx_core.messages import ExecutionReport
from brokerx_core.observability.logging import get_logger
from brokerx_worker.mail.delivery import Outgoing
from brokerx_worker.mail_confirmations import OrderTerms, execution_confirmation

log = get_logger(__name__)

CONFIRMED_EVENTS = frozenset({"fill", "partial_fill", "canceled", "expired"})

RECIPIENTS_SQL = text(
    "SELECT r.client_id, r.order_id, c.email, c.first_name,"
    " c.email_confirmations AND NOT c.is_market_maker AS wanted,"
    " o.quantity, o.type, o.limit_price, o.time_in_force"
    " FROM unnest(CAST(:clients AS uuid[]), CAST(:orders AS uuid[])) AS r(client_id, order_id)"
    " JOIN client c ON c.id = r.client_id"
    " LEFT JOIN client_order o ON o.id = r.order_id"
    " AND c.email_confirmations AND NOT c.is_market_maker"
)


def mail_key(report: ExecutionReport) -> str:
    """The `email_message` key of a report's confirmation: one e-mail per report."""
    return f"exec:{report.report_id}"


async def confirmation_mails(
    sessionmaker: async_sessionmaker[AsyncSession],
    reports: Sequence[ExecutionReport],
    attempts: Mapping[str, int],
) -> dict[str, Outgoing]:
    """report_id → its confirmation, for the reports whose owner gets one.

    `reports` are confirmed events only; `attempts` holds how many sends a report has
    already had (for back-off and giving up).
    """
    pairs = list({(r.client_id, r.order_id) for r in reports})
    if not pairs:
        return {}
    async with sessionmaker() as session:
        # One read: autocommit spares the BEGIN and ROLLBACK round trips.
        conn = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        rows = (
            await conn.execute(
                RECIPIENTS_SQL,
                {"clients": [p[0] for p in pairs], "orders": [p[1] for p in pairs]},
            )
        ).all()
    owners: dict[tuple[uuid.UUID, uuid.UUID], Any] = {(r.client_id, r.order_id): r for r in rows}
    mails: dict[str, Outgoing] = {}
    for report in reports:
        if report.report_id in mails:  # the same report twice in one batch
            continue
        row = owners.get((report.client_id, report.order_id))
        if row is None:
            log.warning("notifier_unknown_client", client_id=str(report.client_id))
            continue
        # Preference off, or the market maker (it trades all day long): no e-mail.
        if not row.wanted:
            continue
        terms = (
            OrderTerms(row.quantity, row.type, row.limit_price, row.time_in_force)
            if row.quantity is not None
            else None
        )
        rendered = execution_confirmation(report, row.first_name, terms)
        mails[report.report_id] = Outgoing(
            key=mail_key(report),
            to=row.email,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            client_id=report.client_id,
            attempt=attempts.get(report.report_id, 0) + 1,
        )
    return mails
