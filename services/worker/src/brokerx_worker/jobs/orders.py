"""DAY-order expiry at the session close.

At `SESSION_CLOSE` every open `day` order placed before that close gets an `expire`
command (outbox row + XADD, the same path as the api's commands); the engine expires
it and releases its reservation. With no session close configured nothing expires.

The cron job runs every minute (and at start-up) and acts once per close: the last
close it handled is remembered in Redis, so a worker that was down at the close catches
up when it comes back. Losing that mark (Redis flushed) only re-sends `expire` commands,
which the engine skips for orders already expired.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from arq import cron
from sqlalchemy import text

from brokerx_core.commands import order_command, publish_commands, write_commands
from brokerx_core.db.base import utcnow
from brokerx_core.intake import OPEN_SQL, TradingRules
from brokerx_core.observability.logging import get_logger
from brokerx_worker.settings import WorkerSettings

log = get_logger(__name__)

LAST_EXPIRY_KEY = "brokerx:day_expiry:last_close"
CHUNK = 1000

_OPEN_DAY_ORDERS = text(
    "SELECT id, symbol, version, intake_seq FROM client_order"
    f" WHERE time_in_force = 'day' AND status IN {OPEN_SQL}"
    " AND created_at < :close AND intake_seq > :after"
    " ORDER BY intake_seq LIMIT :limit"
)


async def expire_day_orders(ctx: dict[str, Any], *, now: datetime | None = None) -> int:
    """Send `expire` for the open DAY orders of the latest session close not handled yet.

    Returns how many commands were written (0 when there is no close or it was handled).
    """
    settings: WorkerSettings = ctx["settings"]
    rules = TradingRules.from_settings(settings)
    close = rules.session.last_close(now or utcnow())
    if close is None:
        return 0
    redis = ctx["streams"]
    handled = await redis.get(LAST_EXPIRY_KEY)
    if handled is not None and datetime.fromisoformat(handled.decode()) >= close:
        return 0
    # One correlation id per close ties the engine's `expired` reports to this run.
    correlation = f"day-expiry-{close:%Y%m%dT%H%MZ}"
    total = 0
    after = 0
    while True:
        async with ctx["sessionmaker"]() as session, session.begin():
            rows = (
                await session.execute(
                    _OPEN_DAY_ORDERS, {"close": close, "after": after, "limit": CHUNK}
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
    await redis.set(LAST_EXPIRY_KEY, close.isoformat())
    log.info("day_orders_expired", close=close.isoformat(), commands=total)
    return total


FUNCTIONS: list[Any] = [expire_day_orders]
CRON_JOBS: list[Any] = [cron(expire_day_orders, run_at_startup=True, unique=True)]
BACKGROUND_TASKS: list[Any] = []
