"""The notifier handles reports a batch at a time, keeping one e-mail per report.

Reports are published before the notifier starts, so they arrive as one batch. SQL is
counted on the engine (`before_cursor_execute`); mail goes to a real SMTP server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiosmtplib
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from brokerx_core.db import create_sessionmaker
from brokerx_core.observability.logging import configure_logging
from brokerx_core.streams import EXECUTIONS_STREAM, NOTIFIER_GROUP
from brokerx_worker.jobs.notifier import Notifier, NotifierConfig
from brokerx_worker.mail import SmtpSession
from brokerx_worker.mail.delivery import CHUNK
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
def settings(servers: ServerUrls, database_url: str, smtp: SmtpSink) -> WorkerSettings:
    return WorkerSettings(
        **settings_overrides(servers, database_url),
        smtp_port=smtp.port,
        email_retry_base_seconds=0.05,
    )


@pytest.fixture
async def start_notifier(
    settings: WorkerSettings, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis
) -> AsyncIterator[StartNotifier]:
    tasks: list[asyncio.Task[None]] = []

    async def start(
        consumer: str = "worker-1", config: NotifierConfig | None = None, **ctx: Any
    ) -> Notifier:
        context = {"settings": settings, "sessionmaker": sessionmaker, "streams": redis, **ctx}
        config = config or NotifierConfig(block_ms=300, linger_ms=10)
        notifier = Notifier(context, consumer, config)
        tasks.append(asyncio.create_task(notifier.run()))
        return notifier

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class WorkerLog:
    """The structured log lines the worker wrote during the test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog

    def count(self, *events: str) -> int:
        return sum(
            1
            for record in self._caplog.records
            if isinstance(record.msg, dict) and record.msg.get("event") in events
        )


@pytest.fixture
def worker_log(caplog: pytest.LogCaptureFixture) -> WorkerLog:
    """Logging set up as the worker sets it up when it starts, and captured."""
    configure_logging("worker", "WARNING")
    caplog.set_level(logging.WARNING)
    return WorkerLog(caplog)


@pytest.fixture
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every SQL statement sent through the test engine from now on."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine.sync_engine, "before_cursor_execute", record)


async def clients(engine: AsyncEngine, count: int) -> list[ClientFixture]:
    return [await create_client(engine, first_name="Ada") for _ in range(count)]


async def drained(redis: Redis, total: int) -> bool:
    """Every published entry read by the group and acknowledged."""
    groups = await redis.xinfo_groups(EXECUTIONS_STREAM)
    return any(
        g["name"] == NOTIFIER_GROUP.encode()
        and int(g["entries-read"] or 0) >= total
        and int(g["pending"]) == 0
        for g in groups
    )


async def pending(redis: Redis) -> int:
    try:
        return int((await redis.xpending(EXECUTIONS_STREAM, NOTIFIER_GROUP))["pending"])
    except ResponseError:  # the group is not there yet
        return -1


async def wait_drained(redis: Redis, total: int) -> None:
    await eventually(lambda: drained(redis, total), message="every entry acknowledged")


async def email_rows(engine: AsyncEngine) -> dict[str, tuple[int, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT to_address, attempts, sent_at IS NOT NULL FROM email_message")
        )
        return {row[0]: (row[1], row[2]) for row in rows}


async def test_a_batch_costs_one_recipient_query_one_smtp_connection_and_a_stamp_per_chunk(
    start_notifier: StartNotifier,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    statements: list[str],
) -> None:
    owners = await clients(engine, 10)
    for owner in owners:
        await publish_report(redis, execution_report(owner, event="new"))
        await publish_report(redis, execution_report(owner, event="partial_fill"))
        await publish_report(redis, execution_report(owner, event="fill"))
    notifier = await start_notifier()
    for owner in owners:
        await smtp.wait_for(owner.email, count=2)
    await wait_drained(redis, 30)
    assert len(smtp.messages) == 20
    assert sum("FROM unnest" in s and "JOIN client" in s for s in statements) == 1
    chunks = -(-20 // CHUNK)  # one bookkeeping transaction per CHUNK messages
    assert sum(s.startswith("INSERT INTO email_message") for s in statements) == chunks
    assert sum(s.startswith("UPDATE email_message") for s in statements) == chunks
    assert notifier.smtp.connections == 1
    assert set((await email_rows(engine)).values()) == {(1, True)}


async def test_events_without_a_confirmation_touch_no_table(
    start_notifier: StartNotifier,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    statements: list[str],
) -> None:
    [owner] = await clients(engine, 1)
    for event_name in ("new", "replaced", "rejected", "cancel_rejected", "new"):
        await publish_report(redis, execution_report(owner, event=event_name))
    statements.clear()
    await start_notifier()
    await wait_drained(redis, 5)
    assert statements == []
    assert smtp.messages == []


async def test_a_transient_failure_mid_batch_retries_from_that_report_and_sends_each_once(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    first, second, third = await clients(engine, 3)
    refused = {second.email}
    accept = smtp.handler.handle_DATA

    async def flaky(server: Any, session: Any, envelope: Any) -> str:
        if refused & set(envelope.rcpt_tos):
            refused.clear()  # once
            return "451 Requested action aborted: try again later"
        return await accept(server, session, envelope)

    smtp.handler.handle_DATA = flaky  # type: ignore[method-assign]
    for owner in (first, second, third):
        await publish_report(redis, execution_report(owner, event="fill"))
    await start_notifier()
    await smtp.wait_for(third.email)
    await wait_drained(redis, 3)
    assert [m.recipients for m in smtp.messages] == [[first.email], [second.email], [third.email]]
    # The report after the failed one was not attempted before the retry.
    assert await email_rows(engine) == {
        first.email: (1, True),
        second.email: (2, True),
        third.email: (1, True),
    }


async def test_a_refused_recipient_is_given_up_and_the_batch_goes_on(
    start_notifier: StartNotifier, engine: AsyncEngine, redis: Redis, smtp: SmtpSink
) -> None:
    first, refused, third = await clients(engine, 3)
    accept = smtp.handler.handle_DATA

    async def picky(server: Any, session: Any, envelope: Any) -> str:
        if refused.email in envelope.rcpt_tos:
            return "550 No such mailbox"
        return await accept(server, session, envelope)

    smtp.handler.handle_DATA = picky  # type: ignore[method-assign]
    for owner in (first, refused, third):
        await publish_report(redis, execution_report(owner, event="fill"))
    await start_notifier()
    await wait_drained(redis, 3)
    assert sorted(r for m in smtp.messages for r in m.recipients) == sorted(
        [first.email, third.email]
    )
    assert (await email_rows(engine))[refused.email] == (1, False)


async def test_a_database_outage_leaves_reports_pending_until_it_ends(
    start_notifier: StartNotifier,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    sessionmaker: async_sessionmaker[AsyncSession],
    worker_log: WorkerLog,
) -> None:
    [owner] = await clients(engine, 1)
    await publish_report(redis, execution_report(owner, event="fill"))
    down = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none")
    config = NotifierConfig(block_ms=300, linger_ms=10, redis_retry_seconds=0.05)
    notifier = await start_notifier(config=config, sessionmaker=create_sessionmaker(down))
    await eventually(
        lambda: pending(redis), lambda n: n == 1, message="the entry is read and left pending"
    )
    # A few failed passes (each logs the error, backs off, then re-reads its own pending
    # entry): the consumer must survive them and send nothing, and tell the operator
    # which store failed (a refused connection is a bare OSError from asyncpg).
    await eventually(
        lambda: asyncio.sleep(0, worker_log.count("notifier_database_error")),
        lambda n: n >= 3,
        message="three passes failed on the database",
    )
    assert smtp.messages == []
    assert await pending(redis) == 1
    assert worker_log.count("notifier_redis_error") == 0  # Redis was never down
    notifier._ctx["sessionmaker"] = sessionmaker  # PostgreSQL is back
    await smtp.wait_for(owner.email)
    await wait_drained(redis, 1)
    await down.dispose()


async def test_a_stop_mid_batch_records_what_went_out(
    start_notifier: StartNotifier,
    settings: WorkerSettings,
    engine: AsyncEngine,
    redis: Redis,
    smtp: SmtpSink,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    owners = await clients(engine, 20)
    accept = smtp.handler.handle_DATA

    async def slow(server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(0.02)
        return await accept(server, session, envelope)

    smtp.handler.handle_DATA = slow  # type: ignore[method-assign]
    for owner in owners:
        await publish_report(redis, execution_report(owner, event="fill"))
    ctx = {"settings": settings, "sessionmaker": sessionmaker, "streams": redis}
    first = Notifier(ctx, "worker-1", NotifierConfig(block_ms=300))
    task = asyncio.create_task(first.run())
    await eventually(lambda: asyncio.sleep(0, len(smtp.messages)), lambda n: n >= 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    before = len(smtp.messages)
    assert before < len(owners)
    # What went out before the stop was stamped sent: a restart does not send it again
    # (bar the one message in flight when the stop came).
    await start_notifier("worker-1")
    for owner in owners:
        await smtp.wait_for(owner.email)
    await wait_drained(redis, len(owners))
    assert len(smtp.messages) <= len(owners) + 1


async def test_a_reused_connection_the_server_dropped_is_replaced_at_once(
    settings: WorkerSettings, smtp: SmtpSink
) -> None:
    session = SmtpSession(settings)
    await session.send(to="a@example.com", subject="one", text="1", html="<p>1</p>", key="k1")
    real = session._smtp.sendmail
    calls = 0

    async def dropped_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        return await real(*args, **kwargs)

    session._smtp.sendmail = dropped_once  # type: ignore[method-assign]
    await session.send(to="b@example.com", subject="two", text="2", html="<p>2</p>", key="k2")
    await session.close()
    assert [m.subject for m in smtp.messages] == ["one", "two"]
    assert session.connections == 2
