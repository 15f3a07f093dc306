"""Second factor: TOTP enrolment and login (no replay), e-mailed codes, MFA lockout."""

from __future__ import annotations

import httpx
import pyotp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import (
    API,
    FakeClock,
    active_client,
    audit_actions,
    bearer,
    challenge,
    enrol_totp,
    logged_in,
    login,
    mfa_verify,
    run_worker,
    running_api,
    worker_settings,
)
from tests.support.polling import eventually
from tests.support.servers import ServerUrls
from tests.support.smtp import ReceivedMail, SmtpSink


@pytest.fixture
def clock() -> FakeClock:
    # Mid-step, so "the next step" is unambiguous.
    start = FakeClock()
    start.now = (int(start.now) // 30) * 30 + 10
    return start


async def login_code_mail(smtp: SmtpSink, address: str, count: int = 1) -> ReceivedMail:
    """The latest e-mailed login code (the sign-up verification mail is skipped)."""

    async def codes() -> list[ReceivedMail]:
        return [m for m in smtp.to(address) if "login code" in m.subject.lower()]

    found = await eventually(codes, lambda mails: len(mails) >= count)
    return found[-1]


async def test_totp_enrolment_then_login_requires_a_code(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "tina@example.com")
    tokens = await logged_in(api, "tina@example.com")
    totp = await enrol_totp(api, tokens["access_token"], clock)
    me = await api.get(f"{API}/me", headers=bearer(tokens["access_token"]))
    assert me.json()["mfa"] == "totp"

    clock.advance(30)
    pending = await challenge(api, "tina@example.com")
    assert pending["methods"] == ["totp"]
    verified = await mfa_verify(api, pending["mfa_token"], totp.at(clock()))
    assert verified.status_code == 200, verified.text
    session = verified.json()
    assert session["token_type"] == "bearer"
    assert (await api.get(f"{API}/me", headers=bearer(session["access_token"]))).status_code == 200
    actions = await audit_actions(engine, "tina@example.com")
    assert "auth.mfa_enabled" in actions
    assert actions[-3:] == ["auth.mfa_challenged", "auth.mfa_succeeded", "auth.login_succeeded"]


async def test_a_totp_code_is_accepted_once_only(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "replay@example.com")
    tokens = await logged_in(api, "replay@example.com")
    totp = await enrol_totp(api, tokens["access_token"], clock)

    # The code that confirmed enrolment cannot also open a login.
    pending = await challenge(api, "replay@example.com")
    enrol_code = totp.at(clock())
    assert (await mfa_verify(api, pending["mfa_token"], enrol_code)).json()["code"] == (
        "invalid_code"
    )

    clock.advance(30)
    code = totp.at(clock())
    assert (await mfa_verify(api, pending["mfa_token"], code)).status_code == 200
    # Same code, fresh login, same 30-second step: refused.
    again = await challenge(api, "replay@example.com")
    replay = await mfa_verify(api, again["mfa_token"], code)
    assert replay.status_code == 401
    assert replay.json()["code"] == "invalid_code"
    # An older step inside the drift window is refused too.
    previous = await mfa_verify(api, again["mfa_token"], totp.at(clock() - 30))
    assert previous.status_code == 401

    clock.advance(30)
    assert (await mfa_verify(api, again["mfa_token"], totp.at(clock()))).status_code == 200


async def test_totp_tolerates_one_step_of_drift_but_not_two(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "drift@example.com")
    tokens = await logged_in(api, "drift@example.com")
    totp = await enrol_totp(api, tokens["access_token"], clock)
    clock.advance(120)
    pending = await challenge(api, "drift@example.com")
    too_old = await mfa_verify(api, pending["mfa_token"], totp.at(clock() - 60))
    assert too_old.status_code == 401
    late_phone = await mfa_verify(api, pending["mfa_token"], totp.at(clock() - 30))
    assert late_phone.status_code == 200


async def test_wrong_totp_code_at_enrolment_is_invalid_code_and_changes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "oops@example.com")
    tokens = await logged_in(api, "oops@example.com")
    headers = bearer(tokens["access_token"])
    no_setup = await api.post(
        f"{API}/auth/mfa/totp/enable", json={"code": "123456"}, headers=headers
    )
    assert no_setup.status_code == 400
    assert no_setup.json()["code"] == "invalid_code"

    secret = (await api.post(f"{API}/auth/mfa/totp/setup", headers=headers)).json()["secret"]
    right = pyotp.TOTP(secret).at(clock())
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for code in (wrong, "abcdef", "1234567"):
        response = await api.post(
            f"{API}/auth/mfa/totp/enable", json={"code": code}, headers=headers
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_code"
    missing = await api.post(f"{API}/auth/mfa/totp/enable", json={}, headers=headers)
    assert missing.status_code == 422
    assert (await api.get(f"{API}/me", headers=headers)).json()["mfa"] == "none"
    # Logging in still needs no second factor.
    assert "access_token" in (await login(api, "oops@example.com")).json()
    assert "auth.mfa_enable_failed" in await audit_actions(engine, "oops@example.com")


async def test_three_wrong_mfa_codes_lock_the_account_until_the_lock_lifts(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "mallory@example.com")
    tokens = await logged_in(api, "mallory@example.com")
    totp = await enrol_totp(api, tokens["access_token"], clock)
    clock.advance(30)
    pending = await challenge(api, "mallory@example.com")
    right = totp.at(clock())
    wrong = [f"{(int(right) + i) % 10**6:06d}" for i in (1, 2, 3)]

    first = await mfa_verify(api, pending["mfa_token"], wrong[0])
    second = await mfa_verify(api, pending["mfa_token"], wrong[1])
    assert (first.status_code, second.status_code) == (401, 401)
    assert first.json()["code"] == "invalid_code"
    third = await mfa_verify(api, pending["mfa_token"], wrong[2])
    assert third.status_code == 423
    assert third.json()["code"] == "account_locked"
    assert int(third.headers["retry-after"]) == 900

    # Locked: the right code and even the password step are refused.
    locked = await mfa_verify(api, pending["mfa_token"], right)
    assert locked.status_code == 423
    relogin = await login(api, "mallory@example.com")
    assert relogin.status_code == 423

    clock.advance(901)
    fresh = await challenge(api, "mallory@example.com")
    assert (await mfa_verify(api, fresh["mfa_token"], totp.at(clock()))).status_code == 200
    actions = await audit_actions(engine, "mallory@example.com")
    assert actions.count("auth.mfa_failed") == 3
    assert "auth.account_locked" in actions


async def test_an_mfa_token_opens_one_session_and_expires(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "once@example.com")
    tokens = await logged_in(api, "once@example.com")
    totp = await enrol_totp(api, tokens["access_token"], clock)
    clock.advance(30)
    pending = await challenge(api, "once@example.com")
    assert (await mfa_verify(api, pending["mfa_token"], totp.at(clock()))).status_code == 200
    clock.advance(30)
    reused = await mfa_verify(api, pending["mfa_token"], totp.at(clock()))
    assert reused.status_code == 401
    assert reused.json()["code"] == "invalid_token"

    late = await challenge(api, "once@example.com")
    clock.advance(301)
    expired = await mfa_verify(api, late["mfa_token"], totp.at(clock()))
    assert expired.status_code == 401
    assert expired.json()["code"] == "invalid_token"
    garbage = await mfa_verify(api, "garbage", "123456")
    assert garbage.status_code == 401


async def test_email_mfa_login_with_the_mailed_code(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await active_client(api, engine, "emma@example.com")
    tokens = await logged_in(api, "emma@example.com")
    enabled = await api.post(f"{API}/auth/mfa/email/enable", headers=bearer(tokens["access_token"]))
    assert enabled.status_code == 200
    assert enabled.json() == {"mfa": "email"}
    me = await api.get(f"{API}/me", headers=bearer(tokens["access_token"]))
    assert me.json()["mfa"] == "email"

    pending = await challenge(api, "emma@example.com")
    assert pending["methods"] == ["email"]
    await run_worker(worker_settings(servers, database_url, smtp))
    mail = await login_code_mail(smtp, "emma@example.com")
    code = mail.code()
    assert code in mail.html
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    rejected = await mfa_verify(api, pending["mfa_token"], wrong)
    assert rejected.status_code == 401
    assert rejected.json()["code"] == "invalid_code"
    verified = await mfa_verify(api, pending["mfa_token"], code)
    assert verified.status_code == 200
    assert (
        await api.get(f"{API}/me", headers=bearer(verified.json()["access_token"]))
    ).status_code == 200

    # The code is spent: a new login cannot use it.
    again = await challenge(api, "emma@example.com")
    assert (await mfa_verify(api, again["mfa_token"], code)).status_code == 401
    async with engine.connect() as conn:
        stored = [r[0] for r in await conn.execute(text("SELECT code_hash FROM verification_code"))]
    assert all(code not in value for value in stored)


async def test_an_emailed_login_code_expires_after_its_time(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    redis: Redis,
    clock: FakeClock,
    smtp: SmtpSink,
) -> None:
    async with running_api(servers, database_url, clock, mfa_token_ttl_seconds=3600) as (_, api):
        await active_client(api, engine, "slow@example.com")
        tokens = await logged_in(api, "slow@example.com")
        await api.post(f"{API}/auth/mfa/email/enable", headers=bearer(tokens["access_token"]))
        pending = await challenge(api, "slow@example.com")
        await run_worker(worker_settings(servers, database_url, smtp))
        code = (await login_code_mail(smtp, "slow@example.com")).code()
        clock.advance(601)
        expired = await mfa_verify(api, pending["mfa_token"], code)
        assert expired.status_code == 401
        assert expired.json()["code"] == "invalid_code"

        # A code used within its 10 minutes works.
        fresh = await challenge(api, "slow@example.com")
        await run_worker(worker_settings(servers, database_url, smtp))
        code = (await login_code_mail(smtp, "slow@example.com", count=2)).code()
        clock.advance(590)
        assert (await mfa_verify(api, fresh["mfa_token"], code)).status_code == 200


async def test_switching_to_email_mfa_drops_the_totp_secret(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "switch@example.com")
    tokens = await logged_in(api, "switch@example.com")
    await enrol_totp(api, tokens["access_token"], clock)
    await api.post(f"{API}/auth/mfa/email/enable", headers=bearer(tokens["access_token"]))
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT mfa_method, totp_secret FROM client"))).one()
    assert tuple(row) == ("email", None)
    assert (await challenge(api, "switch@example.com"))["methods"] == ["email"]
