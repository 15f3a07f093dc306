"""DAY-order expiry at the session close.

At `SESSION_CLOSE` every open `day` order of the session that closed gets an `expire`
command (outbox row + XADD, the same path as the api's commands); the engine expires
it and releases its reservation. With no session close configured nothing expires.

The cron job runs every minute (and at start-up) and makes two passes per close:

- the first right at the close, so resting DAY orders stop trading at once;
- the last once `SETTLE` has passed, for the orders the first pass could not see. An
  intake that passed the market-open check just before the close commits a moment
  later: its order's `created_at` (the intake statement's start) is before the close,
  but the row was invisible to a query that ran in between. After `SETTLE`, longer
  than any intake transaction lasts, every such order is committed.

Which orders belong to the session that closed is decided by `created_at` against the
*next open* (see `session_cut`), not the close itself: nothing is accepted while the
market is closed, so an order stamped after the close but before the next open was
accepted in the closing session (its intake checked the hours a moment before the
close, or on a clock slightly behind the database's). Without a gap between sessions
(open == close) the cut is the close itself.

The last pass handled is remembered in Redis per close, so a worker that was down at
the close catches up when it comes back. Losing those marks (Redis flushed) only
re-sends `expire` commands, which the engine skips for orders already expired.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from arq import cron
from sqlalchemy import text

from brokerx_core.commands import order_command, publish_commands, write_commands
from brokerx_core.db.base import utcnow
from brokerx_core.intake import OPEN_SQL, SessionHours, TradingRules
from brokerx_core.observability.logging import get_logger
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

LAST_EXPIRY_KEY = "brokerx:day_expiry:last_close"  # the close whose last pass was made
FIRST_PASS_KEY = "brokerx:day_expiry:first_pass"  # the close whose first pass was made
CHUNK = 1000
# How long after the close an intake that started before it may still commit. Intake
# is one short autocommitted statement; minutes are a wide margin (and only delay the
# second pass: the first one still runs at the close).
SETTLE = timedelta(minutes=2)

_OPEN_DAY_ORDERS = text(
    "SELECT id, symbol, version, intake_seq FROM client_order"
    f" WHERE time_in_force = 'day' AND status IN {OPEN_SQL}"
    " AND created_at < :cut AND intake_seq > :after"
    " ORDER BY intake_seq LIMIT :limit"
)


def session_cut(session: SessionHours, close: datetime) -> datetime:
    """The first session open at or after `close`: orders created before it belong to
    the session that closed at `close` (the close itself when there is no gap)."""
    opening = (session.open or time(0, 0)).replace(tzinfo=None)
    cut = datetime.combine(close.date(), opening, tzinfo=UTC)
    return cut if cut >= close else cut + timedelta(days=1)


async def _done(redis: Any, key: str, close: datetime) -> bool:
    mark = await redis.get(key)
    return mark is not None and datetime.fromisoformat(mark.decode()) >= close


async def expire_day_orders(ctx: dict[str, Any], *, now: datetime | None = None) -> int:
    """Send `expire` for the open DAY orders of the latest session close, in a first pass
    at the close and a last pass once `SETTLE` has passed (see the module docstring).

    Returns how many commands were written (0 when there is no close or nothing is due).
    """
    settings: WorkerSettings = ctx["settings"]
    rules = TradingRules.from_settings(settings)
    now = now or utcnow()
    close = rules.session.last_close(now)
    if close is None:
        return 0
    redis = ctx["streams"]
    if await _done(redis, LAST_EXPIRY_KEY, close):
        return 0
    last_pass = now >= close + SETTLE
    if not last_pass and await _done(redis, FIRST_PASS_KEY, close):
        return 0  # the first pass was made: wait for the settle
    cut = session_cut(rules.session, close)
    # One correlation id per close ties the engine's `expired` reports to this run.
    correlation = f"day-expiry-{close:%Y%m%dT%H%MZ}"
    total = 0
    after = 0
    while True:
        async with ctx["sessionmaker"]() as session, session.begin():
            rows = (
                await session.execute(
                    _OPEN_DAY_ORDERS, {"cut": cut, "after": after, "limit": CHUNK}
                )
            ).all()
            commands = [
                order_command(
                    "expire", r.id, r.symbol, r.version, ts=utcnow(), correlation_id=correlation
                )
                for r in rows
            ]
            pending = await write_commands(session, commands, shards=rules.shards)
        await publish_commands(redis, pending)
        total += len(pending)
        if len(rows) < CHUNK:
            break
        after = rows[-1].intake_seq
    await redis.set(LAST_EXPIRY_KEY if last_pass else FIRST_PASS_KEY, close.isoformat())
    log.info(
        "day_orders_expired",
        close=close.isoformat(),
        cut=cut.isoformat(),
        last_pass=last_pass,
        commands=total,
    )
    return total


FUNCTIONS: list[Any] = [expire_day_orders]
CRON_JOBS: list[Any] = [cron(expire_day_orders, run_at_startup=True, unique=True)]
BACKGROUND_TASKS: list[Any] = []
