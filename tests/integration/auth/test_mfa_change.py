"""Changing the second factor (which takes only an access token) signs out every other
session of the client, keeps the caller's, and e-mails the client a notice."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import (
    API,
    FakeClock,
    active_client,
    bearer,
    enrol_totp,
    logged_in,
    run_worker,
    worker_settings,
)
from tests.support.servers import ServerUrls
from tests.support.smtp import ReceivedMail, SmtpSink

EMAIL = "owner@example.com"


@pytest.fixture
def totp_clock(clock: FakeClock) -> FakeClock:
    # Mid-step, so "the next step" is unambiguous.
    clock.now = (int(clock.now) // 30) * 30 + 10
    return clock


async def me_status(api: httpx.AsyncClient, tokens: dict[str, str]) -> int:
    return (await api.get(f"{API}/me", headers=bearer(tokens["access_token"]))).status_code


async def refresh_status(api: httpx.AsyncClient, tokens: dict[str, str]) -> int:
    body = {"refresh_token": tokens["refresh_token"]}
    return (await api.post(f"{API}/auth/refresh", json=body)).status_code


async def notices(
    smtp: SmtpSink, servers: ServerUrls, database_url: str, count: int
) -> list[ReceivedMail]:
    """The 'second factor changed' mails to EMAIL, once the worker has run."""
    await run_worker(worker_settings(servers, database_url, smtp))
    mails = await smtp.wait_for(EMAIL, count=count + 1)  # + the sign-up verification mail
    return [m for m in mails if "second factor" in m.subject.lower()]


async def session_states(engine: AsyncEngine) -> list[str]:
    """Each session's revocation reason, or "live"; sorted."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT revoked_reason FROM auth_session"))
        return sorted(row[0] or "live" for row in rows)


async def test_enabling_totp_signs_out_the_other_sessions_and_mails_the_client(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    totp_clock: FakeClock,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await active_client(api, engine, EMAIL)
    caller = await logged_in(api, EMAIL)
    other = await logged_in(api, EMAIL)
    assert await me_status(api, other) == 200  # remembered as live before the change

    await enrol_totp(api, caller["access_token"], totp_clock)

    assert await me_status(api, other) == 401
    assert await refresh_status(api, other) == 401
    assert await me_status(api, caller) == 200
    assert await refresh_status(api, caller) == 200
    assert await session_states(engine) == ["live", "mfa_changed"]
    [notice] = await notices(smtp, servers, database_url, count=1)
    assert "authenticator app" in notice.text
    assert "signed out" in notice.text
    async with engine.connect() as conn:
        details = (
            await conn.execute(
                text("SELECT details FROM audit_event WHERE action = 'auth.mfa_enabled'")
            )
        ).scalar_one()
    assert details["method"] == "totp"
    assert details["sessions_revoked"] == 1


async def test_switching_to_email_codes_signs_out_the_other_sessions_and_mails_once(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    await active_client(api, engine, EMAIL)
    caller = await logged_in(api, EMAIL)
    others = [await logged_in(api, EMAIL) for _ in range(2)]
    headers = bearer(caller["access_token"])

    enabled = await api.post(f"{API}/auth/mfa/email/enable", headers=headers)
    assert enabled.status_code == 200
    assert enabled.json() == {"mfa": "email"}
    for other in others:
        assert await me_status(api, other) == 401
    assert await me_status(api, caller) == 200

    # Enabling what is already on changes nothing: no notice, nothing more revoked.
    again = await api.post(f"{API}/auth/mfa/email/enable", headers=headers)
    assert again.status_code == 200
    assert await me_status(api, caller) == 200
    assert await session_states(engine) == ["live", "mfa_changed", "mfa_changed"]
    [notice] = await notices(smtp, servers, database_url, count=1)
    assert "e-mailed to this address" in notice.text
