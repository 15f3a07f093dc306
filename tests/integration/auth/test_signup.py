"""Sign-up through HTTP, the real worker and SMTP: the happy path and every refusal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import (
    API,
    PASSWORD,
    FakeClock,
    audit_actions,
    bearer,
    count_rows,
    logged_in,
    run_worker,
    sign_up,
    signup_body,
    worker_settings,
)
from tests.support.servers import ServerUrls
from tests.support.smtp import SmtpSink

ONBOARDING_TABLES = ("client", "account", "verification_code", "audit_event")


async def deliver_mail(servers: ServerUrls, database_url: str, smtp: SmtpSink) -> None:
    await run_worker(worker_settings(servers, database_url, smtp))


async def table_counts(engine: AsyncEngine) -> dict[str, int]:
    return {table: await count_rows(engine, table) for table in ONBOARDING_TABLES}


async def test_sign_up_verify_login_and_me_through_the_mailed_code(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    smtp: SmtpSink,
    servers: ServerUrls,
    database_url: str,
) -> None:
    created = await sign_up(api, "  Ada.Lovelace@Example.COM ")
    assert created["email"] == "ada.lovelace@example.com"
    assert created["status"] == "pending"

    await deliver_mail(servers, database_url, smtp)
    [mail] = await smtp.wait_for("ada.lovelace@example.com")
    code = mail.code()
    assert code in mail.html
    assert "verif" in mail.subject.lower()

    # Not verified yet: the right password is not enough.
    refused = await api.post(
        f"{API}/auth/login", json={"email": "ada.lovelace@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_not_active"

    verified = await api.post(
        f"{API}/clients/verify", json={"email": "ADA.lovelace@example.com", "code": code}
    )
    assert verified.status_code == 200, verified.text
    assert verified.json() == {
        "id": created["id"],
        "email": "ada.lovelace@example.com",
        "status": "active",
    }

    tokens = await logged_in(api, "ada.lovelace@example.com")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    me = await api.get(f"{API}/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["id"] == created["id"]
    assert (body["email"], body["first_name"], body["last_name"]) == (
        "ada.lovelace@example.com",
        "Ada",
        "Lovelace",
    )
    assert (body["status"], body["mfa"], body["email_confirmations"]) == ("active", "none", True)
    assert body["created_at"]

    async with engine.connect() as conn:
        cash, reserved = (
            await conn.execute(
                text(
                    "SELECT a.cash, a.reserved_cash FROM account a JOIN client c ON c.id ="
                    " a.client_id WHERE c.email = 'ada.lovelace@example.com'"
                )
            )
        ).one()
    assert (cash, reserved) == (Decimal("0.00"), Decimal("0.00"))
    assert await audit_actions(engine, "ada.lovelace@example.com") == [
        "client.signed_up",
        "auth.login_refused",
        "client.verified",
        "auth.login_succeeded",
    ]


async def test_email_taken_case_insensitively_and_nothing_is_created(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await sign_up(api, "taken@example.com")
    before = await table_counts(engine)
    response = await api.post(f"{API}/clients", json=signup_body(" TAKEN@example.com"))
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "email_taken"
    assert await table_counts(engine) == before


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": None}, "email"),
        ({"first_name": None}, "first_name"),
        ({"first_name": "   "}, "first_name"),
        ({"last_name": None}, "last_name"),
        ({"last_name": 42}, "last_name"),
        ({"date_of_birth": None}, "date_of_birth"),
        ({"date_of_birth": "10/12/1990"}, "date_of_birth"),
        ({"date_of_birth": "1990-02-30"}, "date_of_birth"),
        ({"date_of_birth": 661305600}, "date_of_birth"),
        ({"date_of_birth": "2999-01-01"}, "date_of_birth"),
        ({"address": None}, "address"),
        ({"address": ""}, "address"),
        ({"password": None}, "password"),
        ({"phone": "call me maybe"}, "phone"),
        ({"first_name": "x" * 101}, "first_name"),
    ],
)
async def test_missing_or_malformed_personal_data_is_validation_error(
    api: httpx.AsyncClient, engine: AsyncEngine, overrides: dict[str, object], field: str
) -> None:
    body = {**signup_body("v@example.com"), **overrides}
    body = {key: value for key, value in body.items() if value is not None}
    response = await api.post(f"{API}/clients", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_error"
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert await table_counts(engine) == dict.fromkeys(ONBOARDING_TABLES, 0)


async def test_private_network_addresses_are_accepted(api: httpx.AsyncClient) -> None:
    created = await sign_up(api, "Ops@Brokerx.LOCAL")
    assert created["email"] == "ops@brokerx.local"
    response = await api.post(f"{API}/clients", json=signup_body("ops@localhost"))
    assert response.status_code == 422


async def test_phone_is_optional(api: httpx.AsyncClient) -> None:
    response = await api.post(f"{API}/clients", json=signup_body("nophone@example.com", phone=None))
    assert response.status_code == 201


async def test_non_json_body_is_a_4xx_not_a_500(api: httpx.AsyncClient) -> None:
    response = await api.post(
        f"{API}/clients", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "password",
    [
        "Ab1defg",  # 7 characters
        "alllowercase1",
        "ALLUPPERCASE1",
        "NoDigitsAtAll",
        "Password1",
        "Welcome2024!",
        "P@ssw0rd1",
        "Qwerty123",
        "1Qaz2wsx",
    ],
)
async def test_weak_password_is_refused_and_nothing_is_created(
    api: httpx.AsyncClient, engine: AsyncEngine, password: str
) -> None:
    response = await api.post(
        f"{API}/clients", json=signup_body("weak@example.com", password=password)
    )
    assert response.status_code == 422
    assert response.json()["code"] == "weak_password"
    assert await table_counts(engine) == dict.fromkeys(ONBOARDING_TABLES, 0)


async def test_underage_is_refused_but_eighteen_today_is_accepted(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    clock.now = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()
    young = await api.post(
        f"{API}/clients", json=signup_body("young@example.com", date_of_birth="2007-06-16")
    )
    assert young.status_code == 422
    assert young.json()["code"] == "underage"
    assert await table_counts(engine) == dict.fromkeys(ONBOARDING_TABLES, 0)

    adult = await api.post(
        f"{API}/clients", json=signup_body("adult@example.com", date_of_birth="2007-06-15")
    )
    assert adult.status_code == 201


async def test_a_leap_day_birthday_comes_of_age_on_the_first_of_march(
    api: httpx.AsyncClient, clock: FakeClock
) -> None:
    clock.now = datetime(2022, 2, 28, 12, 0, tzinfo=UTC).timestamp()
    body = signup_body("leap@example.com", date_of_birth="2004-02-29")
    assert (await api.post(f"{API}/clients", json=body)).json()["code"] == "underage"
    clock.now = datetime(2022, 3, 1, 12, 0, tzinfo=UTC).timestamp()
    assert (await api.post(f"{API}/clients", json=body)).status_code == 201


class CommitObservingQueue:
    """The real arq pool, noting what another connection sees at each enqueue."""

    def __init__(self, pool: object, engine: AsyncEngine) -> None:
        self.pool = pool
        self.engine = engine
        self.codes_visible_at_enqueue: list[int] = []

    async def enqueue_job(self, *args: object, **kwargs: object) -> object:
        self.codes_visible_at_enqueue.append(await count_rows(self.engine, "verification_code"))
        return await self.pool.enqueue_job(*args, **kwargs)  # type: ignore[attr-defined]


async def test_the_verification_mail_is_enqueued_only_after_the_commit(
    app_api: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, api = app_api
    queue = CommitObservingQueue(app.state.arq, engine)
    app.state.arq = queue
    try:
        await sign_up(api, "order@example.com")
    finally:
        app.state.arq = queue.pool
    # When the job was handed over, the code it carries was already committed.
    assert queue.codes_visible_at_enqueue == [1]
    assert await app.state.arq.zcard("arq:queue") == 1


async def test_concurrent_sign_ups_of_one_address_create_one_client(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    responses = await asyncio.gather(
        *(api.post(f"{API}/clients", json=signup_body("race@example.com")) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert await count_rows(engine, "client") == 1
    assert await count_rows(engine, "account") == 1
