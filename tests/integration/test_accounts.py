"""GET /account and GET /positions, and what each client may see."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.factories import (
    LoggedInClient,
    create_client,
    create_logged_in_client,
    create_session_token,
    grant_position,
)

API = "/api/v1"
ACCOUNT = f"{API}/account"
POSITIONS = f"{API}/positions"

pytestmark = pytest.mark.usefixtures("instruments")


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def open_order(
    engine: AsyncEngine,
    account_id: uuid.UUID,
    side: str,
    *,
    quantity: int,
    price: str,
    reserved_amount: str = "0",
    reserved_quantity: int = 0,
) -> None:
    """An open limit order with its reservation held by the account or position, as
    order intake leaves it."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO client_order (id, account_id, symbol, side, type, quantity,"
                " limit_price, status, reserved_amount, reserved_quantity)"
                " VALUES (:id, :account, 'AAPL', :side, 'limit', :qty, :price, 'new',"
                " :amount, :reserved_qty)"
            ),
            {
                "id": uuid.uuid4(),
                "account": account_id,
                "side": side,
                "qty": quantity,
                "price": Decimal(price),
                "amount": Decimal(reserved_amount),
                "reserved_qty": reserved_quantity,
            },
        )
        await conn.execute(
            text("UPDATE account SET reserved_cash = reserved_cash + :amount WHERE id = :id"),
            {"amount": Decimal(reserved_amount), "id": account_id},
        )
        await conn.execute(
            text(
                "UPDATE position SET reserved_quantity = reserved_quantity + :qty"
                " WHERE account_id = :id AND symbol = 'AAPL'"
            ),
            {"qty": reserved_quantity, "id": account_id},
        )


async def test_a_new_account_is_empty(api: httpx.AsyncClient, api_app: Any) -> None:
    alice = await create_logged_in_client(api_app)

    response = await api.get(ACCOUNT, headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == {
        "id": str(alice.account_id),
        "currency": "USD",
        "cash": "0.00",
        "reserved_cash": "0.00",
        "buying_power": "0.00",
        "positions_value": "0.00",
        "equity": "0.00",
    }
    assert (await api.get(POSITIONS, headers=alice.headers)).json() == {"items": []}


async def test_account_values_cash_reservations_and_positions(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine
) -> None:
    alice = await create_logged_in_client(api_app, cash=Decimal("10000.00"))
    await grant_position(engine, alice.account_id, "AAPL", 10)
    await grant_position(engine, alice.account_id, "MSFT", 3)
    # AAPL traded at 191.2345 (4-decimal price); MSFT never traded: reference 420.00.
    await execute(engine, "UPDATE instrument SET last_price = 191.2345 WHERE symbol = 'AAPL'")
    await execute(
        engine,
        "UPDATE position SET avg_cost = 180.5 WHERE account_id = :id AND symbol = 'AAPL'",
        id=alice.account_id,
    )
    await open_order(
        engine, alice.account_id, "buy", quantity=5, price="150.00", reserved_amount="750.00"
    )
    await open_order(
        engine, alice.account_id, "sell", quantity=4, price="199.00", reserved_quantity=4
    )

    account = (await api.get(ACCOUNT, headers=alice.headers)).json()
    positions = (await api.get(POSITIONS, headers=alice.headers)).json()["items"]

    assert positions == [
        {
            "symbol": "AAPL",
            "quantity": 10,
            "reserved_quantity": 4,
            "available_quantity": 6,
            "avg_cost": "180.50",
            "last_price": "191.2345",
            "market_value": "1912.34",  # 1912.345 to the cent, half to even
            "unrealized_pl": "107.34",  # 1912.34 - 10 x 180.50
        },
        {
            "symbol": "MSFT",
            "quantity": 3,
            "reserved_quantity": 0,
            "available_quantity": 3,
            "avg_cost": "0.00",  # seeded shares cost nothing
            "last_price": "420.00",
            "market_value": "1260.00",
            "unrealized_pl": "1260.00",
        },
    ]
    assert account == {
        "id": str(alice.account_id),
        "currency": "USD",
        "cash": "10000.00",
        "reserved_cash": "750.00",
        "buying_power": "9250.00",
        "positions_value": "3172.34",
        "equity": "13172.34",
    }


async def test_empty_positions_are_omitted(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine
) -> None:
    alice = await create_logged_in_client(api_app)
    await grant_position(engine, alice.account_id, "AAPL", 1)
    # A position sold down to zero keeps its row.
    await execute(
        engine,
        "INSERT INTO position (account_id, symbol, quantity) VALUES (:id, 'TSLA', 0)",
        id=alice.account_id,
    )

    positions = (await api.get(POSITIONS, headers=alice.headers)).json()["items"]

    assert [p["symbol"] for p in positions] == ["AAPL"]


async def test_a_client_sees_only_its_own_account(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine
) -> None:
    alice = await create_logged_in_client(api_app, cash=Decimal("100.00"))
    bob = await create_logged_in_client(api_app, cash=Decimal("7777.00"))
    await grant_position(engine, bob.account_id, "NVDA", 50)
    await grant_position(engine, alice.account_id, "AAPL", 2)
    for who, amount in ((alice, "1.00"), (bob, "2.00"), (bob, "3.00")):
        await api.post(f"{API}/deposits", json={"amount": amount}, headers=who.headers)

    async def seen_by(who: LoggedInClient) -> dict[str, Any]:
        return {
            path: (await api.get(f"{API}/{path}", headers=who.headers)).json()
            for path in ("account", "positions", "deposits", "ledger")
        }

    mine, theirs = await seen_by(alice), await seen_by(bob)

    assert mine["account"]["id"] == str(alice.account_id)
    assert mine["account"]["cash"] == "101.00"
    assert [p["symbol"] for p in mine["positions"]["items"]] == ["AAPL"]
    assert [d["amount"] for d in mine["deposits"]["items"]] == ["1.00", "100.00"]
    assert [e["amount"] for e in mine["ledger"]["items"]] == ["1.00", "100.00"]
    assert theirs["account"]["cash"] == "7782.00"
    assert [p["symbol"] for p in theirs["positions"]["items"]] == ["NVDA"]
    bobs_ids = {d["id"] for d in theirs["deposits"]["items"]} | {
        e["id"] for e in theirs["ledger"]["items"]
    }
    mine_ids = {d["id"] for d in mine["deposits"]["items"]} | {
        e["id"] for e in mine["ledger"]["items"]
    }
    assert not bobs_ids & mine_ids


async def test_another_clients_cursor_reveals_nothing_of_theirs(
    api: httpx.AsyncClient, api_app: Any
) -> None:
    alice = await create_logged_in_client(api_app)
    bob = await create_logged_in_client(api_app)
    for who in (alice, bob, bob, bob):
        await api.post(f"{API}/deposits", json={"amount": "5.00"}, headers=who.headers)
    bob_page = (await api.get(f"{API}/deposits?limit=1", headers=bob.headers)).json()

    with_bobs_cursor = await api.get(
        f"{API}/deposits", params={"cursor": bob_page["next_cursor"]}, headers=alice.headers
    )

    assert with_bobs_cursor.status_code == 200
    bobs = {
        d["id"] for d in (await api.get(f"{API}/deposits", headers=bob.headers)).json()["items"]
    }
    assert all(item["id"] not in bobs for item in with_bobs_cursor.json()["items"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/account"),
        ("GET", "/positions"),
        ("GET", "/deposits"),
        ("GET", "/ledger"),
        ("POST", "/deposits"),
    ],
)
async def test_every_account_endpoint_needs_a_valid_token(
    api: httpx.AsyncClient, api_app: Any, engine: AsyncEngine, method: str, path: str
) -> None:
    suspended = await create_client(engine, status="suspended")
    revoked = await create_client(engine)
    revoked_token = await create_session_token(api_app, revoked.client_id)
    await execute(
        engine,
        "UPDATE auth_session SET revoked_at = now() WHERE client_id = :c",
        c=revoked.client_id,
    )
    attempts = {
        "no token": {},
        "not a jwt": {"Authorization": "Bearer not-a-jwt"},
        "wrong scheme": {"Authorization": f"Basic {revoked_token}"},
        "revoked session": {"Authorization": f"Bearer {revoked_token}"},
        "suspended client": {
            "Authorization": f"Bearer {await create_session_token(api_app, suspended.client_id)}"
        },
    }

    for case, headers in attempts.items():
        response = await api.request(method, f"{API}{path}", headers=headers, json={"amount": "1"})
        assert response.status_code == 401, case
        assert response.headers["content-type"].startswith("application/problem+json"), case
        assert response.json()["code"] == "unauthorized", case
