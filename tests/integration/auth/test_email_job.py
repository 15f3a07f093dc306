"""The worker's e-mail jobs against a real SMTP server: retries, idempotency, reminders."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.db import create_sessionmaker
from brokerx_worker.jobs.email import send_email, send_verification_reminders
from brokerx_worker.settings import WorkerSettings
from tests.support.auth import (
    API,
    FakeClock,
    audit_actions,
    run_worker,
    running_api,
    sign_up,
    worker_settings,
)
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

MAIL = ("Your statement", "Plain text body 123456", "<p>HTML body <b>123456</b></p>")


@pytest.fixture
def settings(servers: ServerUrls, database_url: str, smtp: SmtpSink) -> WorkerSettings:
    return worker_settings(servers, database_url, smtp)


@pytest.fixture
async def queue(settings: WorkerSettings, redis: Redis) -> AsyncIterator[ArqRedis]:
    pool = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    yield pool
    await pool.aclose()


@pytest.fixture
def ctx(settings: WorkerSettings, engine: AsyncEngine, queue: ArqRedis) -> dict[str, Any]:
    """The ctx the worker's on_startup builds, for calling jobs directly."""
    return {
        "settings": settings,
        "sessionmaker": create_sessionmaker(engine),
        "redis": queue,
        "job_try": 1,
    }


async def email_row(engine: AsyncEngine, key: str) -> tuple[int, bool]:
    async with engine.connect() as conn:
        attempts, sent_at = (
            await conn.execute(
                text("SELECT attempts, sent_at FROM email_message WHERE key = :k"), {"k": key}
            )
        ).one()
    return int(attempts), sent_at is not None


async def test_the_mail_is_multipart_with_text_and_html(
    ctx: dict[str, Any], smtp: SmtpSink, settings: WorkerSettings
) -> None:
    assert await send_email(ctx, "k-multipart", "ann@example.com", *MAIL) == "sent"
    [mail] = smtp.to("ann@example.com")
    assert mail.subject == "Your statement"
    assert mail.text.strip() == "Plain text body 123456"
    assert "<b>123456</b>" in mail.html
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.message["From"] == settings.mail_from


async def test_a_failed_send_is_retried_and_delivered_exactly_once(
    queue: ArqRedis,
    engine: AsyncEngine,
    smtp: SmtpSink,
    settings: WorkerSettings,
) -> None:
    smtp.fail_next(1)
    job = await queue.enqueue_job("send_email", "k-retry", "rita@example.com", *MAIL, _job_id="e1")
    assert job is not None
    worker = await run_worker(settings)
    assert worker.jobs_retried == 1
    assert worker.jobs_failed == 0
    assert len(smtp.to("rita@example.com")) == 1
    assert await email_row(engine, "k-retry") == (2, True)
    assert await job.result(timeout=5) == "sent"


async def test_running_the_same_job_twice_sends_once(
    ctx: dict[str, Any],
    queue: ArqRedis,
    engine: AsyncEngine,
    smtp: SmtpSink,
    settings: WorkerSettings,
) -> None:
    assert await send_email(ctx, "k-twice", "tom@example.com", *MAIL) == "sent"
    assert await send_email(ctx, "k-twice", "tom@example.com", *MAIL) == "already_sent"
    # And through the queue: a redelivered job with the same key is a no-op.
    await queue.enqueue_job("send_email", "k-twice", "tom@example.com", *MAIL, _job_id="e2")
    await run_worker(settings)
    assert len(smtp.to("tom@example.com")) == 1
    assert await email_row(engine, "k-twice") == (1, True)


async def test_concurrent_runs_of_one_key_send_once(
    ctx: dict[str, Any], engine: AsyncEngine, smtp: SmtpSink
) -> None:
    outcomes = await asyncio.gather(
        *(send_email(ctx, "k-race", "rachel@example.com", *MAIL) for _ in range(4))
    )
    assert sorted(outcomes) == ["already_sent"] * 3 + ["sent"]
    assert len(smtp.to("rachel@example.com")) == 1


async def test_the_job_gives_up_after_its_attempts(
    queue: ArqRedis,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    smtp.fail_next(10)
    settings = worker_settings(servers, database_url, smtp, email_max_attempts=3)
    job = await queue.enqueue_job("send_email", "k-down", "gus@example.com", *MAIL, _job_id="e3")
    assert job is not None
    worker = await run_worker(settings)
    assert worker.jobs_retried == 2
    assert await job.result(timeout=5) == "failed"
    assert smtp.messages == []
    assert await email_row(engine, "k-down") == (3, False)


async def test_an_unreachable_smtp_server_is_retried(
    ctx: dict[str, Any],
    engine: AsyncEngine,
    servers: ServerUrls,
    database_url: str,
    smtp: SmtpSink,
) -> None:
    from arq import Retry

    ctx = {**ctx, "settings": worker_settings(servers, database_url, smtp, smtp_port=1)}
    with pytest.raises(Retry):
        await send_email(ctx, "k-unreachable", "una@example.com", *MAIL)
    assert await email_row(engine, "k-unreachable") == (1, False)


@pytest.fixture
async def api(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(servers, database_url, FakeClock()) as (_, client):
        yield client


async def age(engine: AsyncEngine, email: str, hours: int, reminders_sent: int = 0) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE client SET created_at = now() - make_interval(hours => :h),"
                " reminders_sent = :r WHERE email = :e"
            ),
            {"h": hours, "r": reminders_sent, "e": email},
        )


async def test_reminders_go_out_at_day_1_and_day_3_once_each_with_a_working_code(
    api: httpx.AsyncClient,
    ctx: dict[str, Any],
    engine: AsyncEngine,
    smtp: SmtpSink,
    settings: WorkerSettings,
) -> None:
    for email in ("fresh@example.com", "day1@example.com", "day3@example.com", "done@example.com"):
        await sign_up(api, email)
    await age(engine, "fresh@example.com", 20)
    await age(engine, "day1@example.com", 25)
    await age(engine, "day3@example.com", 73, reminders_sent=1)
    await age(engine, "done@example.com", 200, reminders_sent=2)
    await run_worker(settings)  # the sign-up mails
    signup_mails = len(smtp.messages)

    assert await send_verification_reminders(ctx) == 2
    assert await send_verification_reminders(ctx) == 0  # idempotent
    await run_worker(settings)
    reminders = smtp.messages[signup_mails:]
    assert sorted(r for m in reminders for r in m.recipients) == [
        "day1@example.com",
        "day3@example.com",
    ]
    assert all("reminder" in m.subject.lower() for m in reminders)
    [day1] = [m for m in reminders if "day1@example.com" in m.recipients]
    assert day1.code() in day1.html

    verified = await api.post(
        f"{API}/clients/verify", json={"email": "day1@example.com", "code": day1.code()}
    )
    assert verified.status_code == 200
    assert "client.verification_reminded" in await audit_actions(engine, "day1@example.com")
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT email, reminders_sent FROM client ORDER BY email"))
        assert dict(rows.all()) == {
            "day1@example.com": 1,
            "day3@example.com": 2,
            "done@example.com": 2,
            "fresh@example.com": 0,
        }


async def test_a_client_missed_at_day_1_gets_a_single_reminder_at_day_3(
    api: httpx.AsyncClient, ctx: dict[str, Any], engine: AsyncEngine
) -> None:
    await sign_up(api, "late@example.com")
    await sign_up(api, "verified@example.com")
    await age(engine, "late@example.com", 80)
    await age(engine, "verified@example.com", 80)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE client SET status = 'active' WHERE email LIKE 'verified%'"))
    assert await send_verification_reminders(ctx) == 1
    assert await send_verification_reminders(ctx) == 0
    async with engine.connect() as conn:
        sent = (
            await conn.execute(text("SELECT reminders_sent FROM client WHERE email LIKE 'late%'"))
        ).scalar_one()
    assert sent == 2
