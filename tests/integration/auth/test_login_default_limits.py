"""The default login limits (API.md, "Clients and authentication"): at least 120 login
attempts a minute from one IP, also when they are all for one account; lockouts still
apply per account."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import active_client, login

ATTEMPTS = 120


async def test_120_logins_to_one_account_from_one_ip_in_a_minute_all_succeed(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # The api runs on a clock that does not move: every attempt is in the same minute.
    await active_client(api, engine, "busy-trader@example.com")
    statuses = [(await login(api, "busy-trader@example.com")).status_code for _ in range(ATTEMPTS)]
    assert statuses == [200] * ATTEMPTS

    # The lockout after consecutive wrong passwords still applies to that account.
    wrong = [
        (await login(api, "busy-trader@example.com", "Wrong-Pass-1")).status_code for _ in range(5)
    ]
    assert wrong[:4] == [401] * 4
    assert wrong[4] in (401, 423)  # the failure that reaches the limit may answer 423
    locked = await login(api, "busy-trader@example.com")
    assert locked.status_code == 423
    assert locked.json()["code"] == "account_locked"
