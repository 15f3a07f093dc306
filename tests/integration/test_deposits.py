"""POST /deposits: amounts read exactly, the ledger, and every refusal changing nothing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.factories import (
    LoggedInClient,
    account_state,
    create_logged_in_client,
)

DEPOSITS = "/api/v1/deposits"


@pytest.fixture
async def alice(api_app: Any) -> LoggedInClient:
    return await create_logged_in_client(api_app)


async def post_raw(
    api: httpx.AsyncClient, who: LoggedInClient, raw: str, **headers: str
) -> httpx.Response:
    """POST a body exactly as written (JSON numbers must reach the api untouched)."""
    return await api.post(
        DEPOSITS,
        content=raw.encode(),
        headers={**who.headers, "Content-Type": "application/json", **headers},
    )


async def test_a_deposit_credits_the_account_and_appends_a_ledger_entry(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    first = await api.post(DEPOSITS, json={"amount": "250.5"}, headers=alice.headers)
    second = await api.post(
        DEPOSITS, json={"amount": "49.50", "currency": "USD"}, headers=alice.headers
    )

    assert first.status_code == 201, first.text
    body = first.json()
    assert set(body) == {"id", "amount", "currency", "status", "balance_after", "created_at"}
    assert body["amount"] == "250.50"
    assert body["currency"] == "USD"
    assert body["status"] == "settled"
    assert body["balance_after"] == "250.50"
    assert body["created_at"].endswith("Z")
    assert second.json()["balance_after"] == "300.00"

    account = (await api.get("/api/v1/account", headers=alice.headers)).json()
    assert account["cash"] == "300.00"
    ledger = (await api.get("/api/v1/ledger", headers=alice.headers)).json()["items"]
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in ledger] == [
        ("deposit", "49.50", "300.00"),
        ("deposit", "250.50", "250.50"),
    ]
    assert ledger[1]["reference_id"] == body["id"]
    listed = (await api.get(DEPOSITS, headers=alice.headers)).json()["items"]
    assert listed[1] == body


@pytest.mark.parametrize(
    ("raw_amount", "credited"),
    [
        ("0.1", "0.10"),  # a JSON number: never the float 0.1000000000000000055...
        ('"0.1"', "0.10"),
        ("12345.67", "12345.67"),
        ("1e2", "100.00"),
        ("7", "7.00"),
        ("1000000.00", "1000000.00"),  # the maximum itself is allowed
        ('"1000000"', "1000000.00"),
    ],
)
async def test_amounts_are_read_exactly_from_strings_and_numbers(
    api: httpx.AsyncClient, engine: Any, alice: LoggedInClient, raw_amount: str, credited: str
) -> None:
    response = await post_raw(api, alice, f'{{"amount": {raw_amount}}}')

    assert response.status_code == 201, response.text
    assert response.json()["amount"] == credited
    assert (await account_state(engine, alice.account_id)).cash == Decimal(credited)


@pytest.mark.parametrize(
    "raw_amount",
    [
        "0",
        '"0.00"',
        "-5",
        '"-0.01"',
        "10.001",  # a JSON number with 3 decimals
        '"10.001"',
        "100.0000000000000001",  # as a float this would be 100.0 and slip through
        '"100.000000000000000000000000000001"',  # beyond Decimal's 28-digit context
        "1000000.01",
        '"1000000.01"',
        "1e400",
        '"abc"',
        '""',
        '" 10"',
        '"1_000"',
        '"NaN"',
        '"Infinity"',
        "NaN",
        "true",
        "[1]",
        '{"value": 1}',
        "1" * 5000,  # past Python's int-parsing digit limit
    ],
)
async def test_an_invalid_amount_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, engine: Any, alice: LoggedInClient, raw_amount: str
) -> None:
    before = await account_state(engine, alice.account_id)

    response = await post_raw(
        api, alice, f'{{"amount": {raw_amount}}}', **{"Idempotency-Key": "k1"}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_amount"
    assert await account_state(engine, alice.account_id) == before


@pytest.mark.parametrize("currency", ['"EUR"', '"CAD"', '""', "5", "[]"])
async def test_a_currency_other_than_usd_is_refused(
    api: httpx.AsyncClient, engine: Any, alice: LoggedInClient, currency: str
) -> None:
    before = await account_state(engine, alice.account_id)

    response = await post_raw(api, alice, f'{{"amount": "10.00", "currency": {currency}}}')

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unsupported_currency"
    assert await account_state(engine, alice.account_id) == before


async def test_currency_is_case_insensitive_and_reported_in_upper_case(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    response = await api.post(
        DEPOSITS, json={"amount": "10", "currency": "usd"}, headers=alice.headers
    )
    assert response.status_code == 201
    assert response.json()["currency"] == "USD"


@pytest.mark.parametrize(
    ("raw", "headers"),
    [
        ("{not json", {}),
        ("[]", {}),
        ('"100.00"', {}),
        ("", {}),
        ("{}", {}),
        ('{"amount": null}', {}),
        ('{"amount": "10.00"}', {"Idempotency-Key": "x" * 256}),
        ('{"amount": "10.00"}', {"Idempotency-Key": ""}),
    ],
    ids=[
        "invalid-json",
        "array",
        "bare-string",
        "empty-body",
        "missing-amount",
        "null-amount",
        "key-too-long",
        "empty-key",
    ],
)
async def test_a_malformed_request_is_a_validation_error_and_changes_nothing(
    api: httpx.AsyncClient,
    engine: Any,
    alice: LoggedInClient,
    raw: str,
    headers: dict[str, str],
) -> None:
    before = await account_state(engine, alice.account_id)

    response = await post_raw(api, alice, raw, **headers)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["errors"], "validation errors list where the problem is"
    assert await account_state(engine, alice.account_id) == before


async def test_a_key_of_255_characters_is_accepted(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    key = "k" * 255
    first = await api.post(
        DEPOSITS, json={"amount": "1.00"}, headers={**alice.headers, "Idempotency-Key": key}
    )
    again = await api.post(
        DEPOSITS, json={"amount": "1.00"}, headers={**alice.headers, "Idempotency-Key": key}
    )
    assert (first.status_code, again.status_code) == (201, 200)


async def test_without_a_key_each_request_is_a_new_deposit(
    api: httpx.AsyncClient, engine: Any, alice: LoggedInClient
) -> None:
    for _ in range(2):
        response = await api.post(DEPOSITS, json={"amount": "10.00"}, headers=alice.headers)
        assert response.status_code == 201

    state = await account_state(engine, alice.account_id)
    assert (state.cash, state.deposits, state.ledger_entries) == (Decimal("20.00"), 2, 2)


async def test_a_deposit_without_a_token_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, engine: Any, alice: LoggedInClient
) -> None:
    before = await account_state(engine, alice.account_id)

    response = await api.post(DEPOSITS, json={"amount": "10.00"})
    forged = await api.post(
        DEPOSITS, json={"amount": "10.00"}, headers={"Authorization": "Bearer not-a-jwt"}
    )

    assert (response.status_code, forged.status_code) == (401, 401)
    assert response.json()["code"] == "unauthorized"
    assert await account_state(engine, alice.account_id) == before
