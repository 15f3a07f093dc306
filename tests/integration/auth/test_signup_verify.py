"""E-mail verification codes (single use, hashed, 24 h) and resending them."""

from __future__ import annotations

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import (
    API,
    FakeClock,
    audit_actions,
    count_rows,
    run_worker,
    sign_up,
    worker_settings,
)
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink


async def deliver_mail(servers: ServerUrls, database_url: str, smtp: SmtpSink) -> None:
    await run_worker(worker_settings(servers, database_url, smtp))


async def test_code_is_single_use_and_second_verify_is_already_active(
    api: httpx.AsyncClient, smtp: SmtpSink, servers: ServerUrls, database_url: str
) -> None:
    await sign_up(api, "grace@example.com")
    await deliver_mail(servers, database_url, smtp)
    code = (await smtp.wait_for("grace@example.com"))[0].code()
    first = await api.post(
        f"{API}/clients/verify", json={"email": "grace@example.com", "code": code}
    )
    assert first.status_code == 200
    again = await api.post(
        f"{API}/clients/verify", json={"email": "grace@example.com", "code": code}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "already_active"


async def test_the_stored_code_is_hashed(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await sign_up(api, "hash@example.com")
    await deliver_mail(servers, database_url, smtp)
    code = (await smtp.wait_for("hash@example.com"))[0].code()
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT code_hash FROM verification_code"))).scalar_one()
    assert code not in stored
    assert len(stored) == 64


async def test_wrong_or_expired_code_is_invalid_code(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    clock: FakeClock,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await sign_up(api, "late@example.com")
    await deliver_mail(servers, database_url, smtp)
    code = (await smtp.wait_for("late@example.com"))[0].code()
    wrong = "000000" if code != "000000" else "111111"
    for attempt in (wrong, "12ab56", ""):
        response = await api.post(
            f"{API}/clients/verify", json={"email": "late@example.com", "code": attempt}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_code"
    unknown = await api.post(
        f"{API}/clients/verify", json={"email": "nobody@example.com", "code": code}
    )
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "invalid_code"

    clock.advance(24 * 3600 + 1)
    expired = await api.post(
        f"{API}/clients/verify", json={"email": "late@example.com", "code": code}
    )
    assert expired.status_code == 400
    assert expired.json()["code"] == "invalid_code"
    async with engine.connect() as conn:
        status = (await conn.execute(text("SELECT status FROM client"))).scalar_one()
    assert status == "pending"
    assert "client.verification_failed" in await audit_actions(engine, "late@example.com")


async def test_code_is_still_valid_just_before_24_hours(
    api: httpx.AsyncClient,
    clock: FakeClock,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await sign_up(api, "patient@example.com")
    await deliver_mail(servers, database_url, smtp)
    code = (await smtp.wait_for("patient@example.com"))[0].code()
    clock.advance(24 * 3600 - 60)
    response = await api.post(
        f"{API}/clients/verify", json={"email": "patient@example.com", "code": code}
    )
    assert response.status_code == 200


async def test_resend_answers_the_same_for_unknown_and_known_addresses(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await sign_up(api, "again@example.com")
    unknown = await api.post(f"{API}/clients/verify/resend", json={"email": "ghost@example.com"})
    known = await api.post(f"{API}/clients/verify/resend", json={"email": "again@example.com"})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()

    await deliver_mail(servers, database_url, smtp)
    mails = await smtp.wait_for("again@example.com", count=2)
    assert smtp.to("ghost@example.com") == []
    # The worker may deliver the two in any order: tell them apart by the code they carry.
    async with engine.connect() as conn:
        live = (
            await conn.execute(text("SELECT id FROM verification_code WHERE consumed_at IS NULL"))
        ).scalar_one()
    [newest] = [m for m in mails if m.message["X-BrokerX-Key"] == f"verification:{live}"]
    [stale] = [m for m in mails if m is not newest]
    # Only the newest code works. Two random 6-digit codes are equal once in a million;
    # the check below needs them apart to tell the two mails' codes from each other.
    assert stale.code() != newest.code()
    refused = await api.post(
        f"{API}/clients/verify", json={"email": "again@example.com", "code": stale.code()}
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_code"
    fresh = await api.post(
        f"{API}/clients/verify", json={"email": "again@example.com", "code": newest.code()}
    )
    assert fresh.status_code == 200
    # An active account gets no more codes.
    await api.post(f"{API}/clients/verify/resend", json={"email": "again@example.com"})
    await deliver_mail(servers, database_url, smtp)
    assert len(smtp.to("again@example.com")) == 2
    assert await count_rows(engine, "email_message") == 2


async def test_resend_is_rate_limited_with_retry_after(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    statuses = []
    for _ in range(6):
        response = await api.post(
            f"{API}/clients/verify/resend", json={"email": "spam@example.com"}
        )
        statuses.append(response.status_code)
    assert statuses == [202] * 5 + [429]
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    clock.advance(61)
    after = await api.post(f"{API}/clients/verify/resend", json={"email": "spam@example.com"})
    assert after.status_code == 202
