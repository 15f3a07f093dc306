"""Execution confirmations by e-mail: the worker's `notifier` consumer of `executions`.

Reports are XADDed as the engine publishes them; mail is received by a real SMTP server.
"Nothing was sent" is proven without sleeping: reports are handled in stream order, so
once the e-mail of a later report has arrived, every earlier report has been handled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from brokerx_core.messages import encode
from brokerx_core.streams import EXECUTIONS_STREAM, NOTIFIER_GROUP
from brokerx_worker.jobs.notifier import Notifier, NotifierConfig
from brokerx_worker.settings import WorkerSettings
from tests.conftest import settings_overrides
from tests.support.factories import ClientFixture, create_client
from tests.support.live import execution_report, publish_report
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.usefixtures("instruments")

StartNotifier = Callable[..., Awaitable[Notifier]]


@pytest.fixture
async def start_notifier(
    servers: ServerUrls,
    database_url: str,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    smtp: SmtpSink,
) -> AsyncIterator[StartNotifier]:
    """Start notifier consumers (as the worker's background task does); stopped at the end."""
    tasks: list[asyncio.Task[None]] = []
    settings = WorkerSettings(
        **settings_overrides(servers, database_url),
        smtp_port=smtp.port,
        email_retry_base_seconds=0.05,
    )

    async def start(consumer: str = "worker-1", **config: Any) -> Notifier:
        ctx = {"settings": settings, "sessionmaker": sessionmaker, "streams": redis}
        notifier = Notifier(ctx, consumer, NotifierConfig(block_ms=500, **config))
        tasks.append(asyncio.create_task(notifier.run()))
        return notifier

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def barrier(redis: Redis, engine: AsyncEngine, smtp: SmtpSink) -> None:
    """Publish a fill for a fresh client and wait for its e-mail: everything published
    before it has been handled by then."""
    witness = await ada(engine)
    await publish_report(redis, execution_report(witness, event="fill"))
    await smtp.wait_for(witness.email)


async def ada(engine: AsyncEngine, *, confirmations: bool = True) -> ClientFixture:
    """A client called Ada, with trade confirmations on or off."""
    created = await create_client(engine, first_name="Ada")
    if not confirmations:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE client SET email_confirmations = false WHERE id = :id"),
                {"id": created.client_id},
            )
    return created


async def pending_count(redis: Redis) -> int:
    info = await redis.xpending(EXECUTIONS_STREAM, NOTIFIER_GROUP)
    return int(info["pending"])


async def test_a_fill_reported_twice_sends_one_confirmation(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    client = await ada(engine)
    await start_notifier()
    report = execution_report(client, event="fill", quantity=10, client_order_id="my-ref-7")
    await publish_report(redis, report)
    await publish_report(redis, report)  # redelivered / republished by the engine
    [mail] = await smtp.wait_for(client.email)
    await barrier(redis, engine, smtp)
    assert len(smtp.to(client.email)) == 1
    assert mail.subject == "Order filled: Bought 10 AAPL at 190.25"
    assert str(report.order_id) in mail.text
    assert "my-ref-7" in mail.text
    assert "10 at 190.25 USD" in mail.text
    assert "Hello Ada," in mail.text
    assert "190.25" in mail.html
    async with engine.connect() as conn:
        key = (
            await conn.execute(
                text("SELECT key, sent_at FROM email_message WHERE client_id = :c"),
                {"c": client.client_id},
            )
        ).one()
    assert key.key == f"exec:{report.report_id}"
    assert key.sent_at is not None
    await eventually(lambda: pending_count(redis), lambda n: n == 0, message="entries acked")


@pytest.mark.parametrize(
    ("event", "reason", "subject", "phrase"),
    [
        ("partial_fill", None, "Partial fill: Bought 5 AAPL at 190.25", "Remaining:      5"),
        ("canceled", "ioc", "Order canceled: buy AAPL", "could not trade at once"),
        ("expired", None, "Order expired: buy AAPL", "expired at the end of its trading session"),
    ],
)
async def test_partial_fills_cancels_and_expiries_are_confirmed(
    start_notifier: StartNotifier,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    event: str,
    reason: str | None,
    subject: str,
    phrase: str,
) -> None:
    client = await ada(engine)
    await start_notifier()
    await publish_report(redis, execution_report(client, event=event, reason=reason))
    [mail] = await smtp.wait_for(client.email)
    assert mail.subject == subject
    assert phrase in mail.text


async def test_the_order_terms_are_in_the_confirmation_when_the_order_is_known(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    client = await ada(engine)
    order_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO client_order (id, account_id, symbol, side, type, quantity,"
                " limit_price, time_in_force, status, filled_quantity)"
                " VALUES (:id, :a, 'AAPL', 'buy', 'limit', 10, 190.30, 'gtc', 'filled', 10)"
            ),
            {"id": order_id, "a": client.account_id},
        )
    await start_notifier()
    await publish_report(redis, execution_report(client, event="fill", order_id=order_id))
    [mail] = await smtp.wait_for(client.email)
    assert "buy 10 AAPL (limit 190.30, GTC)" in mail.text


@pytest.mark.parametrize("event", ["new", "replaced", "rejected", "cancel_rejected"])
async def test_no_confirmation_for_events_that_move_no_shares_or_end_nothing(
    start_notifier: StartNotifier,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    event: str,
) -> None:
    client = await ada(engine)
    await start_notifier()
    await publish_report(redis, execution_report(client, event=event))
    await barrier(redis, engine, smtp)
    assert smtp.to(client.email) == []


async def test_no_confirmation_when_the_client_turned_them_off(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    quiet = await ada(engine, confirmations=False)
    await start_notifier()
    await publish_report(redis, execution_report(quiet, event="fill"))
    await publish_report(redis, execution_report(quiet, event="canceled", reason="requested"))
    await barrier(redis, engine, smtp)
    assert smtp.to(quiet.email) == []
    await eventually(lambda: pending_count(redis), lambda n: n == 0, message="skips are acked")


async def test_the_market_maker_gets_no_confirmations(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    maker = await ada(engine)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE client SET is_market_maker = true WHERE id = :id"), {"id": maker.client_id}
        )
    await start_notifier()
    await publish_report(redis, execution_report(maker, event="fill"))
    await barrier(redis, engine, smtp)
    assert smtp.to(maker.email) == []


async def test_a_report_published_before_the_group_existed_is_confirmed(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    client = await ada(engine)
    await publish_report(redis, execution_report(client, event="fill"))
    await start_notifier()
    await smtp.wait_for(client.email)


async def test_a_transient_smtp_failure_is_retried_and_sends_once(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    client = await ada(engine)
    smtp.fail_next(2)
    await start_notifier()
    await publish_report(redis, execution_report(client, event="fill"))
    await smtp.wait_for(client.email)
    await barrier(redis, engine, smtp)
    assert len(smtp.to(client.email)) == 1
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(
                text("SELECT attempts FROM email_message WHERE client_id = :c"),
                {"c": client.client_id},
            )
        ).scalar_one()
    assert attempts == 3


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    client = await ada(engine)
    await redis.xgroup_create(EXECUTIONS_STREAM, NOTIFIER_GROUP, id="0", mkstream=True)
    await redis.xadd(EXECUTIONS_STREAM, encode(execution_report(client, event="fill")))
    # A consumer reads the entry, then dies before sending or acknowledging it.
    taken = await redis.xreadgroup(NOTIFIER_GROUP, "dead-worker", {EXECUTIONS_STREAM: ">"})
    assert len(taken[0][1]) == 1
    await start_notifier("worker-2", claim_idle_ms=200, claim_interval_seconds=0.1)
    await smtp.wait_for(client.email)
    await eventually(lambda: pending_count(redis), lambda n: n == 0, message="reclaimed and acked")


async def test_confirmations_resume_after_redis_is_flushed(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    before, after = await ada(engine), await ada(engine)
    await start_notifier()
    await publish_report(redis, execution_report(before, event="fill"))
    await smtp.wait_for(before.email)
    await redis.flushdb()  # stream and group are gone; the engine XADDs again later
    await publish_report(redis, execution_report(after, event="fill"))
    await smtp.wait_for(after.email)
    await eventually(
        lambda: redis.xinfo_groups(EXECUTIONS_STREAM),
        lambda groups: any(g["name"] == NOTIFIER_GROUP.encode() for g in groups),
        message="group recreated",
    )


async def test_two_notifiers_share_the_stream_and_each_report_is_mailed_once(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    clients: list[ClientFixture] = [await ada(engine) for _ in range(10)]
    await start_notifier("worker-a")
    await start_notifier("worker-b")
    for client in clients:
        await publish_report(redis, execution_report(client, event="fill"))
    for client in clients:
        await smtp.wait_for(client.email)
    await barrier(redis, engine, smtp)
    assert all(len(smtp.to(c.email)) == 1 for c in clients)
