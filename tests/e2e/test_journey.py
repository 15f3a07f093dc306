"""A client's whole journey through the running system: the launcher starts api,
matching and worker as real processes; everything goes through HTTP and WebSocket.

Sign-up (code read from the mail catcher) → verify → login → deposit → a real cross
against another client's resting order → fills over WebSocket → cash, positions and
reservations moved exactly → partial fill then cancel → IOC remainder canceled →
selling beyond holdings refused → confirmation e-mails → invariants hold.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.asyncio.client import connect

from brokerx_core.invariants import find_violations
from tests.e2e.conftest import Launcher
from tests.support.auth import PASSWORD, signup_body
from tests.support.factories import grant_position
from tests.support.live import recv_json, recv_until
from tests.support.polling import eventually
from tests.support.servers import ServerUrls

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API = "/api/v1"


@pytest.fixture
def system(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, tmp_path: Path
) -> Iterator[Launcher]:
    """The whole system on the test database (emptied first), market maker off."""
    launcher = Launcher(tmp_path / "data", tmp_path / "launcher.log")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": servers.redis_url,
        "LOG_LEVEL": "WARNING",
    }
    launcher.start(env, "--no-market-maker")
    try:
        yield launcher
    finally:
        launcher.kill()


def mails_to(launcher: Launcher, address: str) -> list[EmailMessage]:
    found: list[EmailMessage] = []
    for path in sorted((launcher.data_dir / "mail").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if address in str(message["To"]).lower():
            found.append(message)
    return found


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def wait_for_mails(launcher: Launcher, address: str, count: int) -> list[EmailMessage]:
    async def probe() -> list[EmailMessage]:
        return mails_to(launcher, address)

    return await eventually(
        probe, lambda mails: len(mails) >= count, timeout=15, message=f"mail to {address}"
    )


async def sign_up_verified(http: httpx.AsyncClient, launcher: Launcher, address: str) -> str:
    """Sign up through the api, verify with the e-mailed code, log in: an access token."""
    created = await http.post(f"{API}/clients", json=signup_body(address))
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending"
    (verification,) = await wait_for_mails(launcher, address, 1)
    code = re.search(r"\b(\d{6})\b", plain_text(verification))
    assert code is not None
    verified = await http.post(f"{API}/clients/verify", json={"email": address, "code": code[1]})
    assert verified.status_code == 200, verified.text
    assert verified.json()["status"] == "active"
    tokens = await http.post(f"{API}/auth/login", json={"email": address, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return str(tokens.json()["access_token"])


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def order_in(
    http: httpx.AsyncClient, token: str, order_id: str, statuses: set[str]
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        response = await http.get(f"{API}/orders/{order_id}", headers=auth(token))
        assert response.status_code == 200, response.text
        return dict(response.json())

    return await eventually(
        probe, lambda order: order["status"] in statuses, timeout=10, message=f"{statuses}"
    )


async def place(http: httpx.AsyncClient, token: str, **order: Any) -> dict[str, Any]:
    response = await http.post(f"{API}/orders", json=order, headers=auth(token))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending_new"
    return dict(response.json())


async def test_a_client_journey_through_the_running_system(
    system: Launcher, engine: AsyncEngine
) -> None:
    await system.wait_healthy()
    async with httpx.AsyncClient(
        base_url=system.url("api", ""), timeout=10, trust_env=False
    ) as http:
        alice = await sign_up_verified(http, system, "alice@example.com")
        bob = await sign_up_verified(http, system, "bob@example.com")

        deposit = await http.post(
            f"{API}/deposits",
            json={"amount": "10000.00"},
            headers={**auth(alice), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert deposit.status_code == 201, deposit.text
        bob_account = (await http.get(f"{API}/account", headers=auth(bob))).json()
        await grant_position(engine, uuid.UUID(bob_account["id"]), "AAPL", 100)

        ws_url = system.url("api", f"{API}/stream").replace("http://", "ws://")
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"action": "auth", "token": alice}))
            assert await recv_json(ws) == {"type": "authenticated"}
            await ws.send(json.dumps({"action": "subscribe", "orders": True}))
            await recv_until(ws, lambda m: m["type"] == "subscribed")

            # Bob's sell rests; Alice's higher buy crosses it at Bob's (resting) price.
            sell = await place(
                http, bob, symbol="AAPL", side="sell", type="limit", quantity=10,
                limit_price="190.00", time_in_force="gtc",
            )  # fmt: skip
            await order_in(http, bob, sell["id"], {"new"})
            buy = await place(
                http, alice, symbol="AAPL", side="buy", type="limit", quantity=10,
                limit_price="191.00", time_in_force="day",
            )  # fmt: skip
            assert buy["reserved_amount"] == "1910.00"
            fill, _ = await recv_until(
                ws,
                lambda m: (
                    m["type"] == "execution_report"
                    and m["order_id"] == buy["id"]
                    and m["event"] == "fill"
                ),
                timeout=5,
            )
            assert (fill["fill_price"], fill["fill_quantity"]) == ("190.00", 10)
            assert fill["leaves_quantity"] == 0

        filled = await order_in(http, alice, buy["id"], {"filled"})
        assert filled["avg_fill_price"].startswith("190.00")
        assert [(f["price"], f["quantity"]) for f in filled["fills"]] == [("190.00", 10)]
        assert (await order_in(http, bob, sell["id"], {"filled"}))["filled_quantity"] == 10

        alice_account = (await http.get(f"{API}/account", headers=auth(alice))).json()
        assert (alice_account["cash"], alice_account["reserved_cash"]) == ("8100.00", "0.00")
        (alice_position,) = (await http.get(f"{API}/positions", headers=auth(alice))).json()[
            "items"
        ]
        assert (alice_position["symbol"], alice_position["quantity"]) == ("AAPL", 10)
        assert Decimal(alice_position["avg_cost"]) == Decimal("190")
        bob_after = (await http.get(f"{API}/account", headers=auth(bob))).json()
        assert bob_after["cash"] == "1900.00"
        (bob_position,) = (await http.get(f"{API}/positions", headers=auth(bob))).json()["items"]
        assert (bob_position["quantity"], bob_position["reserved_quantity"]) == (90, 0)
        alice_trades = (await http.get(f"{API}/trades", headers=auth(alice))).json()["items"]
        assert [(t["side"], t["price"], t["quantity"]) for t in alice_trades] == [
            ("buy", "190.00", 10)
        ]

        # Partial fill, then the client cancels the rest: the reservation comes back.
        await order_in(
            http,
            bob,
            (
                await place(
                    http,
                    bob,
                    symbol="AAPL",
                    side="sell",
                    type="limit",
                    quantity=5,
                    limit_price="189.00",
                    time_in_force="gtc",
                )  # fmt: skip
            )["id"],
            {"new"},
        )
        partial = await place(
            http, alice, symbol="AAPL", side="buy", type="limit", quantity=8,
            limit_price="189.00", time_in_force="gtc",
        )  # fmt: skip
        resting = await order_in(http, alice, partial["id"], {"partially_filled"})
        assert (resting["filled_quantity"], resting["leaves_quantity"]) == (5, 3)
        cancel = await http.delete(f"{API}/orders/{partial['id']}", headers=auth(alice))
        assert cancel.status_code == 202, cancel.text
        await order_in(http, alice, partial["id"], {"canceled"})
        alice_account = (await http.get(f"{API}/account", headers=auth(alice))).json()
        assert (alice_account["cash"], alice_account["reserved_cash"]) == ("7155.00", "0.00")

        # IOC against an empty ask side: nothing trades, the order is canceled.
        ioc = await place(
            http, alice, symbol="AAPL", side="buy", type="limit", quantity=5,
            limit_price="190.00", time_in_force="ioc",
        )  # fmt: skip
        canceled = await order_in(http, alice, ioc["id"], {"canceled"})
        assert canceled["filled_quantity"] == 0

        # No short selling: Alice holds 15 AAPL.
        refused = await http.post(
            f"{API}/orders",
            json={"symbol": "AAPL", "side": "sell", "type": "limit", "quantity": 16,
                  "limit_price": "190.00"},
            headers=auth(alice),
        )  # fmt: skip
        assert refused.status_code == 422
        assert refused.json()["code"] == "insufficient_position"
        # A filled order cannot be canceled.
        late = await http.delete(f"{API}/orders/{buy['id']}", headers=auth(alice))
        assert (late.status_code, late.json()["code"]) == (422, "order_not_cancelable")

    # Confirmations: verification + fill + partial fill + cancel + IOC cancel for Alice.
    alice_mails = await wait_for_mails(system, "alice@example.com", 5)
    assert any("190.00" in plain_text(m) for m in alice_mails[1:])
    assert await find_violations(engine, pending_grace_seconds=5) == []
    assert await system.interrupt() == 0
