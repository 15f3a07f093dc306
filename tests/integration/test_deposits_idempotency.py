"""Idempotency-Key on POST /deposits: replays, reuse, in-flight twins and concurrency."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.invariants import find_violations
from tests.support.factories import LoggedInClient, account_state, create_logged_in_client
from tests.support.polling import eventually

DEPOSITS = "/api/v1/deposits"


@pytest.fixture
async def alice(api_app: Any) -> LoggedInClient:
    return await create_logged_in_client(api_app)


def keyed(who: LoggedInClient, key: str) -> dict[str, str]:
    return {**who.headers, "Idempotency-Key": key}


async def test_a_replay_answers_200_with_the_first_body_and_credits_once(
    api: httpx.AsyncClient, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    first = await api.post(DEPOSITS, json={"amount": "100.00"}, headers=keyed(alice, "dep-1"))
    # The same request written differently (a number, fewer decimals) is the same body.
    replays = [
        await api.post(DEPOSITS, json=body, headers=keyed(alice, "dep-1"))
        for body in ({"amount": "100.00"}, {"amount": 100}, {"amount": "100", "currency": "USD"})
    ]

    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    for replay in replays:
        assert replay.status_code == 200
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.content == first.content  # byte for byte the first response
    state = await account_state(engine, alice.account_id)
    assert (state.cash, state.deposits, state.ledger_entries) == (Decimal("100.00"), 1, 1)


async def test_a_key_reused_with_another_body_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    await api.post(DEPOSITS, json={"amount": "100.00"}, headers=keyed(alice, "dep-1"))
    before = await account_state(engine, alice.account_id)

    response = await api.post(DEPOSITS, json={"amount": "100.01"}, headers=keyed(alice, "dep-1"))

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert await account_state(engine, alice.account_id) == before
    # The key still replays its first request.
    replay = await api.post(DEPOSITS, json={"amount": "100.00"}, headers=keyed(alice, "dep-1"))
    assert replay.status_code == 200


async def test_keys_belong_to_one_client(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    bob = await create_logged_in_client(api_app)

    mine = await api.post(DEPOSITS, json={"amount": "10.00"}, headers=keyed(alice, "shared"))
    theirs = await api.post(DEPOSITS, json={"amount": "99.00"}, headers=keyed(bob, "shared"))

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert theirs.json()["id"] != mine.json()["id"]
    assert (await account_state(engine, bob.account_id)).cash == Decimal("99.00")
    assert (await account_state(engine, alice.account_id)).cash == Decimal("10.00")


async def test_a_twin_of_a_request_still_in_flight_answers_409(
    api: httpx.AsyncClient, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    async with engine.connect() as blocker:
        # Hold the account's row lock: the first request takes its key, then waits here.
        await blocker.execute(
            text("SELECT 1 FROM account WHERE id = :id FOR UPDATE"), {"id": alice.account_id}
        )
        first = asyncio.create_task(
            api.post(DEPOSITS, json={"amount": "5.00"}, headers=keyed(alice, "slow"))
        )
        await eventually(
            lambda: _waiting_on_account_lock(engine),
            message="the first deposit never reached the account update",
        )

        # Bounded: a twin that waited for the first instead of answering would hang here.
        twin = await asyncio.wait_for(
            api.post(DEPOSITS, json={"amount": "5.00"}, headers=keyed(alice, "slow")), timeout=10
        )

        assert twin.status_code == 409
        assert twin.json()["code"] == "idempotency_in_progress"
        assert twin.headers["Retry-After"] == "1"
        assert not first.done()
        await blocker.rollback()

    assert (await first).status_code == 201
    retried = await api.post(DEPOSITS, json={"amount": "5.00"}, headers=keyed(alice, "slow"))
    assert retried.status_code == 200
    assert retried.json() == (await first).json()
    assert (await account_state(engine, alice.account_id)).cash == Decimal("5.00")


async def _waiting_on_account_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE account%' AND datname = current_database()"
            )
        )
    return bool(waiting)


async def test_fifty_concurrent_requests_with_one_key_credit_once(
    api: httpx.AsyncClient, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    responses = await asyncio.gather(
        *(
            api.post(DEPOSITS, json={"amount": "25.00"}, headers=keyed(alice, "burst"))
            for _ in range(50)
        )
    )

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 201, 409}, statuses
    assert statuses.count(201) == 1
    created = next(r for r in responses if r.status_code == 201)
    for replay in (r for r in responses if r.status_code == 200):
        assert replay.json() == created.json()
        assert replay.headers["Idempotent-Replayed"] == "true"
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.json()["code"] == "idempotency_in_progress"
    state = await account_state(engine, alice.account_id)
    assert (state.cash, state.deposits, state.ledger_entries) == (Decimal("25.00"), 1, 1)
    assert state.idempotency_records == 1
    assert await find_violations(engine) == []


async def test_two_hundred_concurrent_deposits_sum_exactly(
    api: httpx.AsyncClient, engine: AsyncEngine, alice: LoggedInClient
) -> None:
    # Distinct amounts with cents: a lost or doubled update would show in the sum.
    amounts = [Decimal(i) + Decimal(i % 100) / 100 for i in range(1, 201)]

    responses = await asyncio.gather(
        *(
            api.post(DEPOSITS, json={"amount": str(amount)}, headers=keyed(alice, f"key-{i}"))
            for i, amount in enumerate(amounts)
        )
    )

    assert [r.status_code for r in responses] == [201] * 200
    account = (await api.get("/api/v1/account", headers=alice.headers)).json()
    assert Decimal(account["cash"]) == sum(amounts)
    ledger = (await api.get("/api/v1/ledger?limit=500", headers=alice.headers)).json()["items"]
    assert len(ledger) == 200
    assert ledger[0]["balance_after"] == account["cash"]
    # Oldest to newest, every balance is the previous one plus the entry's amount.
    balance = Decimal("0")
    for entry in reversed(ledger):
        balance += Decimal(entry["amount"])
        assert Decimal(entry["balance_after"]) == balance
    # Each response reported the balance its own deposit produced.
    reported = sorted(Decimal(r.json()["balance_after"]) for r in responses)
    assert reported == sorted(Decimal(e["balance_after"]) for e in ledger)
    assert await find_violations(engine) == []
