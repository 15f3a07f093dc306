"""GET /deposits and GET /ledger: newest first, keyset pages, limits and cursors."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.factories import LoggedInClient, create_logged_in_client

DEPOSITS = "/api/v1/deposits"
LEDGER = "/api/v1/ledger"


@pytest.fixture
async def alice(api_app: Any) -> LoggedInClient:
    return await create_logged_in_client(api_app)


async def deposit_amounts(api: httpx.AsyncClient, who: LoggedInClient, count: int) -> None:
    """Deposit 1.00, 2.00, ... `count`.00 one after another (amount = age rank)."""
    for amount in range(1, count + 1):
        response = await api.post(DEPOSITS, json={"amount": amount}, headers=who.headers)
        assert response.status_code == 201


async def walk(
    api: httpx.AsyncClient, who: LoggedInClient, path: str, limit: int
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await api.get(path, params=params, headers=who.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, "pagination does not end"


@pytest.mark.parametrize("path", [DEPOSITS, LEDGER])
async def test_120_items_come_in_pages_of_50_50_20_newest_first_without_overlap(
    api: httpx.AsyncClient, alice: LoggedInClient, path: str
) -> None:
    await deposit_amounts(api, alice, 120)

    pages = await walk(api, alice, path, limit=50)

    assert [len(page) for page in pages] == [50, 50, 20]
    items = [item for page in pages for item in page]
    assert len({item["id"] for item in items}) == 120
    assert [Decimal(item["amount"]) for item in items] == [Decimal(n) for n in range(120, 0, -1)]


async def test_the_default_page_is_50_and_a_short_list_has_no_next_cursor(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    await deposit_amounts(api, alice, 51)

    first = (await api.get(DEPOSITS, headers=alice.headers)).json()
    last = (
        await api.get(DEPOSITS, params={"cursor": first["next_cursor"]}, headers=alice.headers)
    ).json()

    assert len(first["items"]) == 50
    assert first["next_cursor"] is not None
    assert [item["amount"] for item in last["items"]] == ["1.00"]
    assert last["next_cursor"] is None


async def test_an_exact_multiple_ends_without_an_empty_page(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    await deposit_amounts(api, alice, 4)

    pages = await walk(api, alice, LEDGER, limit=2)

    assert [len(page) for page in pages] == [2, 2]


async def test_an_empty_list(api: httpx.AsyncClient, alice: LoggedInClient) -> None:
    for path in (DEPOSITS, LEDGER):
        assert (await api.get(path, headers=alice.headers)).json() == {
            "items": [],
            "next_cursor": None,
        }


@pytest.mark.parametrize("path", [DEPOSITS, LEDGER])
@pytest.mark.parametrize("limit", ["0", "-1", "501", "abc", "1.5"])
async def test_a_limit_out_of_range_is_a_validation_error(
    api: httpx.AsyncClient, alice: LoggedInClient, path: str, limit: str
) -> None:
    response = await api.get(path, params={"limit": limit}, headers=alice.headers)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_limit_500_is_allowed(api: httpx.AsyncClient, alice: LoggedInClient) -> None:
    response = await api.get(LEDGER, params={"limit": 500}, headers=alice.headers)
    assert response.status_code == 200


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", [DEPOSITS, LEDGER])
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage!",
        "bm90IGpzb24",  # base64 of "not json"
        _b64({"seq": 1}),
        _b64(["ledger", "not-a-number"]),
        _b64(["deposits", "yesterday", "not-a-uuid"]),
        _b64(["deposits", "2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000000"]),
        _b64(["orders", 5]),
        "A" * 600,
    ],
)
async def test_a_garbage_cursor_is_refused(
    api: httpx.AsyncClient, alice: LoggedInClient, path: str, cursor: str
) -> None:
    response = await api.get(path, params={"cursor": cursor}, headers=alice.headers)

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_cursor"


async def test_a_cursor_of_one_list_is_refused_by_the_other(
    api: httpx.AsyncClient, alice: LoggedInClient
) -> None:
    await deposit_amounts(api, alice, 3)
    deposits_cursor = (await api.get(DEPOSITS, params={"limit": 1}, headers=alice.headers)).json()[
        "next_cursor"
    ]
    ledger_cursor = (await api.get(LEDGER, params={"limit": 1}, headers=alice.headers)).json()[
        "next_cursor"
    ]

    on_ledger = await api.get(LEDGER, params={"cursor": deposits_cursor}, headers=alice.headers)
    on_deposits = await api.get(DEPOSITS, params={"cursor": ledger_cursor}, headers=alice.headers)

    assert (on_ledger.status_code, on_deposits.status_code) == (422, 422)
    assert on_ledger.json()["code"] == on_deposits.json()["code"] == "invalid_cursor"
