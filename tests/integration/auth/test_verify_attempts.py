"""A sign-up verification code is spent after five wrong guesses (migration 0011 counts
them in `verification_code.attempts`): the right code no longer works, a resent one does.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from brokerx_core.migrate import downgrade, upgrade
from tests.support.auth import (
    API,
    FakeClock,
    audit_actions,
    run_worker,
    running_api,
    sign_up,
    worker_settings,
)
from tests.support.scratch_db import scratch_database
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

EMAIL = "guess@example.com"


async def verify(api: httpx.AsyncClient, code: str) -> httpx.Response:
    return await api.post(f"{API}/clients/verify", json={"email": EMAIL, "code": code})


def wrong_codes(right: str, count: int) -> list[str]:
    return [f"{(int(right) + i) % 10**6:06d}" for i in range(1, count + 1)]


async def mailed_code(
    smtp: SmtpSink, servers: ServerUrls, database_url: str, *, count: int = 1
) -> str:
    """The code of the `count`-th verification mail to EMAIL (the worker runs first)."""
    await run_worker(worker_settings(servers, database_url, smtp))
    return (await smtp.wait_for(EMAIL, count=count))[count - 1].code()


async def code_rows(engine: AsyncEngine) -> list[tuple[int, bool]]:
    """(attempts, spent) of EMAIL's codes, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT v.attempts, v.consumed_at IS NOT NULL FROM verification_code v"
                " JOIN client c ON c.id = v.client_id WHERE c.email = :e ORDER BY v.created_at"
            ),
            {"e": EMAIL},
        )
        return [(int(row[0]), bool(row[1])) for row in rows]


@pytest.fixture
async def code(
    api: httpx.AsyncClient, smtp: SmtpSink, servers: ServerUrls, database_url: str
) -> str:
    """EMAIL signed up; the code its verification mail carries."""
    await sign_up(api, EMAIL)
    return await mailed_code(smtp, servers, database_url)


async def test_five_wrong_codes_spend_the_code_and_a_resent_one_works(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
    code: str,
) -> None:
    for wrong in wrong_codes(code, 5):
        response = await verify(api, wrong)
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_code"

    right_too_late = await verify(api, code)
    assert right_too_late.status_code == 400
    assert right_too_late.json()["code"] == "invalid_code"
    assert await code_rows(engine) == [(5, True)]

    resent = await api.post(f"{API}/clients/verify/resend", json={"email": EMAIL})
    assert resent.status_code == 202
    new_code = await mailed_code(smtp, servers, database_url, count=2)
    verified = await verify(api, new_code)
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "active"
    actions = await audit_actions(engine, EMAIL)
    assert actions.count("client.verification_failed") == 6
    assert actions[-1] == "client.verified"


async def test_resends_past_the_daily_cap_send_no_code_until_a_day_has_passed(
    servers: ServerUrls,
    database_url: str,
    engine: AsyncEngine,
    smtp: SmtpSink,
    clock: FakeClock,
) -> None:
    """Each code allows five guesses, so the codes a day bound the guesses a day."""
    async with running_api(servers, database_url, clock, verification_codes_per_day=2) as (
        _,
        api,
    ):
        await sign_up(api, EMAIL)
        for _ in range(2):
            resent = await api.post(f"{API}/clients/verify/resend", json={"email": EMAIL})
            assert resent.status_code == 202  # the same answer, sent or not
        # Sign-up and one resend were sent; the second resend was refused.
        assert len(await code_rows(engine)) == 2
        assert (await audit_actions(engine, EMAIL)).count("client.verification_resend_capped") == 1

        clock.advance(24 * 3600 + 1)
        resent = await api.post(f"{API}/clients/verify/resend", json={"email": EMAIL})
        assert resent.status_code == 202
        assert len(await code_rows(engine)) == 3
        newest = await mailed_code(smtp, servers, database_url, count=3)
        verified = await verify(api, newest)
        assert verified.status_code == 200, verified.text


async def test_the_fifth_guess_may_still_be_the_right_code(
    api: httpx.AsyncClient, engine: AsyncEngine, code: str
) -> None:
    for wrong in wrong_codes(code, 4):
        assert (await verify(api, wrong)).status_code == 400
    assert (await verify(api, code)).status_code == 200
    assert await code_rows(engine) == [(5, True)]


async def test_concurrent_guesses_are_all_counted_and_only_five_are_checked(
    api: httpx.AsyncClient, engine: AsyncEngine, code: str
) -> None:
    responses = await asyncio.gather(*(verify(api, wrong) for wrong in wrong_codes(code, 20)))
    assert {r.status_code for r in responses} == {400}
    # The count stops at the limit: no guess past the fifth was compared with the code.
    assert await code_rows(engine) == [(5, True)]
    assert (await verify(api, code)).status_code == 400


async def test_migration_0011_counts_from_zero_for_older_code_and_rolls_back(
    servers: ServerUrls,
) -> None:
    """Rows written by code that knows nothing of `attempts` start at 0; the downgrade
    drops the column and the upgrade adds it again."""
    older_insert = text(
        "INSERT INTO verification_code (id, client_id, purpose, code_hash, expires_at)"
        " VALUES (:id, :client, 'email_verification', 'h', now() + interval '1 day')"
    )
    columns = text(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = 'verification_code' AND column_name = 'attempts'"
    )
    async with scratch_database(servers, "brokerx_attempts") as url:
        await asyncio.to_thread(upgrade, url, "0011")
        engine = create_async_engine(url)
        try:
            client_id = uuid.uuid4()
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                        " date_of_birth, address) VALUES (:id, 'm@example.com', 'x', 'A', 'B',"
                        " '1990-01-01', 'addr')"
                    ),
                    {"id": client_id},
                )
                await conn.execute(older_insert, {"id": uuid.uuid4(), "client": client_id})
                attempts = await conn.execute(text("SELECT attempts FROM verification_code"))
                assert attempts.scalar_one() == 0
            await asyncio.to_thread(downgrade, url, "0010")
            async with engine.connect() as conn:
                assert (await conn.execute(columns)).first() is None
                # The rows themselves stay, for the older release to read.
                count = await conn.execute(text("SELECT count(*) FROM verification_code"))
                assert count.scalar_one() == 1
            await asyncio.to_thread(upgrade, url)
            async with engine.connect() as conn:
                assert (await conn.execute(columns)).first() is not None
        finally:
            await engine.dispose()
