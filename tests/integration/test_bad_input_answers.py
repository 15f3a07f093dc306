"""Bad input answers 4xx problem+json with its `code`, never 500, changes nothing, and
never fails anyone else's request (API.md: "No error ever answers 500 for bad input").

Bodies are sent as raw bytes: JSON numbers must reach the api exactly as written, and
`"\\ud800"` (a lone surrogate once decoded) cannot go through httpx's own encoder.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core import intake
from brokerx_core.intake.amend import Amended
from brokerx_core.intake.batcher import IntakeBatcher
from brokerx_core.intake.cancels import CancelRequest
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
    running_api,
)
from tests.support.intake import new_account, order, running_batcher
from tests.support.servers import ServerUrls
from tests.support.trading import (
    Trader,
    account_state,
    count_rows,
    create_trader,
    place,
    stream_commands,
)

pytestmark = pytest.mark.usefixtures("instruments")

HUGE_EXPONENT = "1e9999999999999999999"  # beyond what Decimal can hold
HUGE_INTEGER = "1" * 5000  # beyond Python's int-parsing digit limit
ABSURD_PRICE = "190." + "0" * 20_000  # on the tick, in the band, unstorable
NO_SUCH_ORDER = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def app_api(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The api on one intake connection, so concurrent orders share flush cycles."""
    clock = FakeClock((int(FakeClock().now) // 30) * 30 + 10)  # mid TOTP step
    async with running_api(servers, database_url, clock, intake_connections=1) as pair:
        yield pair


@pytest.fixture
def api(app_api: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_api[1]


@pytest.fixture
async def trader(engine: AsyncEngine, app_api: tuple[FastAPI, httpx.AsyncClient]) -> Trader:
    return await create_trader(engine, app_api[0], cash="100000.00", shares={"MSFT": 500})


@pytest.fixture
async def other(engine: AsyncEngine, app_api: tuple[FastAPI, httpx.AsyncClient]) -> Trader:
    return await create_trader(engine, app_api[0], cash="100000.00", shares={"MSFT": 500})


async def send(
    api: httpx.AsyncClient, method: str, path: str, raw: str, headers: dict[str, str]
) -> httpx.Response:
    headers = {**headers, "Content-Type": "application/json"}
    return await api.request(method, path, content=raw.encode(), headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code


def limit_buy(price: str = '"190.00"', quantity: str = "10", symbol: str = '"AAPL"') -> str:
    return (
        f'{{"symbol": {symbol}, "side": "buy", "type": "limit",'
        f' "quantity": {quantity}, "limit_price": {price}}}'
    )


# --- 1. numbers Decimal cannot hold -------------------------------------------------


@pytest.mark.parametrize("amount", [HUGE_EXPONENT, f"-{HUGE_EXPONENT}", "1e-9999999999999999999"])
async def test_a_deposit_of_a_number_beyond_decimal_range_is_an_invalid_amount(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, amount: str
) -> None:
    before = await account_state(engine, trader.account_id), await count_rows(engine, "deposit")

    response = await send(api, "POST", f"{API}/deposits", f'{{"amount": {amount}}}', trader.headers)

    assert_problem(response, 422, "invalid_amount")
    assert (
        await account_state(engine, trader.account_id),
        await count_rows(engine, "deposit"),
    ) == before
    fine = await send(api, "POST", f"{API}/deposits", '{"amount": 5}', trader.headers)
    assert fine.status_code == 201, fine.text


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(limit_buy(price=HUGE_EXPONENT), "invalid_price", id="price-exponent"),
        pytest.param(limit_buy(price=HUGE_INTEGER), "invalid_price", id="price-digits"),
        pytest.param(limit_buy(quantity=HUGE_EXPONENT), "invalid_quantity", id="qty-exponent"),
        pytest.param(limit_buy(quantity=HUGE_INTEGER), "invalid_quantity", id="qty-digits"),
        pytest.param(limit_buy(price=ABSURD_PRICE), "invalid_price", id="price-20000-zeros"),
        pytest.param(limit_buy(price=f'"{ABSURD_PRICE}"'), "invalid_price", id="price-text"),
    ],
)
async def test_an_order_number_beyond_range_is_refused_by_its_field(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader, body: str, code: str
) -> None:
    response = await send(api, "POST", f"{API}/orders", body, trader.headers)

    assert_problem(response, 422, code)
    assert await count_rows(engine, "client_order") == 0
    assert (await account_state(engine, trader.account_id))[1] == 0
    assert await stream_commands(redis) == []


@pytest.mark.parametrize("price", [HUGE_EXPONENT, HUGE_INTEGER, ABSURD_PRICE])
async def test_a_replace_price_beyond_range_is_an_invalid_price(
    api: httpx.AsyncClient, engine: AsyncEngine, redis: Redis, trader: Trader, price: str
) -> None:
    placed = await place(api, trader)
    headers = {**trader.headers, "If-Match": "1"}

    response = await send(
        api, "PATCH", f"{API}/orders/{placed['id']}", f'{{"limit_price": {price}}}', headers
    )

    assert_problem(response, 422, "invalid_price")
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order"]
    assert await count_rows(engine, "outbox") == 1


# --- 2. If-Match beyond any version ---------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
@pytest.mark.parametrize("digits", [19, 5000])
async def test_an_if_match_longer_than_any_version_is_a_validation_error(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    redis: Redis,
    trader: Trader,
    method: str,
    digits: int,
) -> None:
    placed = await place(api, trader)
    headers = {**trader.headers, "If-Match": "9" * digits}

    response = await send(api, method, f"{API}/orders/{placed['id']}", '{"quantity": 5}', headers)

    assert_problem(response, 422, "validation_error")
    assert [c.type for _, c in await stream_commands(redis)] == ["new_order"]
    cancel = await api.delete(f"{API}/orders/{placed['id']}", headers=trader.headers)
    assert cancel.status_code == 202, cancel.text


# --- 3. MFA codes of non-ASCII digits or unencodable text ------------------------------

ARABIC_INDIC = "١٢٣٤٥٦"


async def test_a_totp_code_of_non_ascii_digits_is_invalid_code(
    app_api: tuple[FastAPI, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    app, api = app_api
    await active_client(api, engine, "tina@example.com")
    tokens = await logged_in(api, "tina@example.com")
    headers = bearer(tokens["access_token"])
    await api.post(f"{API}/auth/mfa/totp/setup", headers=headers)

    for code in (ARABIC_INDIC, "\ud800" * 6):
        raw = json.dumps({"code": code})
        enabling = await send(api, "POST", f"{API}/auth/mfa/totp/enable", raw, headers)
        assert_problem(enabling, 400, "invalid_code")
    assert (await api.get(f"{API}/me", headers=headers)).json()["mfa"] == "none"

    totp = await enrol_totp(api, tokens["access_token"], app.state.clock)
    app.state.clock.advance(30)
    pending = await challenge(api, "tina@example.com")
    for code in (ARABIC_INDIC, "\ud800" * 6):
        raw = json.dumps({"mfa_token": pending["mfa_token"], "code": code})
        assert_problem(
            await send(api, "POST", f"{API}/auth/mfa/verify", raw, {}), 401, "invalid_code"
        )
    right = await mfa_verify(api, pending["mfa_token"], totp.at(app.state.clock()))
    assert right.status_code == 200, right.text


async def test_an_emailed_code_of_unencodable_text_is_invalid_code(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await active_client(api, engine, "emma@example.com")
    tokens = await logged_in(api, "emma@example.com")
    await api.post(f"{API}/auth/mfa/email/enable", headers=bearer(tokens["access_token"]))
    pending = await challenge(api, "emma@example.com")

    for code in ("\ud800" * 6, "12\x003456"):  # a third wrong code would lock the account
        raw = json.dumps({"mfa_token": pending["mfa_token"], "code": code})
        assert_problem(
            await send(api, "POST", f"{API}/auth/mfa/verify", raw, {}), 401, "invalid_code"
        )


async def test_a_sign_up_code_of_unencodable_text_is_invalid_code(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await api.post(
        f"{API}/clients",
        json={
            "email": "sam@example.com",
            "password": "Sturdy-Falcon-42",
            "first_name": "Sam",
            "last_name": "Vimes",
            "date_of_birth": "1980-01-01",
            "address": "1 Pseudopolis Yard",
        },
    )
    assert created.status_code == 201, created.text

    raw = json.dumps({"email": "sam@example.com", "code": "\ud800" * 6})
    answered = await send(api, "POST", f"{API}/clients/verify", raw, {})

    assert_problem(answered, 400, "invalid_code")
    assert await count_rows(engine, "verification_code") == 1


# --- 4 and 7. Login with an e-mail no account can have ------------------------------------


@pytest.mark.parametrize(
    "email",
    ["\ud800@x.com", "a\x00@x.com", "a" * 321 + "@x.com", "", "   ", "\ud800"],
    ids=["lone-surrogate", "nul", "over-320", "empty", "blank", "bare-surrogate"],
)
async def test_login_with_an_email_no_account_can_have_is_invalid_credentials(
    api: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    await active_client(api, engine, "bob@example.com")
    unknown = await login(api, "nobody@example.com", "Sturdy-Falcon-42")

    raw = json.dumps({"email": email, "password": "Sturdy-Falcon-42"})
    response = await send(api, "POST", f"{API}/auth/login", raw, {})

    assert_problem(response, 401, "invalid_credentials")
    assert response.json() == unknown.json()
    failures = [a for a in await audit_actions(engine) if a == "auth.login_failed"]
    assert len(failures) == 2
    assert (await login(api, "bob@example.com")).status_code == 200


@pytest.mark.parametrize("body", ['{"password": "x"}', '{"email": 5, "password": "x"}'])
async def test_login_without_an_email_string_is_a_validation_error(
    api: httpx.AsyncClient, body: str
) -> None:
    assert_problem(await send(api, "POST", f"{API}/auth/login", body, {}), 422, "validation_error")


# --- 5. One bad order never fails its neighbours --------------------------------------------


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        pytest.param(limit_buy(symbol='"AA\\ud800"'), "unknown_symbol", id="surrogate-symbol"),
        pytest.param(limit_buy(symbol='"AA\\u0000PL"'), "unknown_symbol", id="nul-symbol"),
        pytest.param(limit_buy(price=f'"{ABSURD_PRICE}"'), "invalid_price", id="absurd-price"),
    ],
)
async def test_a_bad_order_fails_only_itself(
    api: httpx.AsyncClient, engine: AsyncEngine, trader: Trader, other: Trader, bad: str, code: str
) -> None:
    resting = [await place(api, other, price="185.00") for _ in range(2)]
    await place(api, trader, price="185.00")  # both sessions known: no lookup delays one
    good = [send(api, "POST", f"{API}/orders", limit_buy(), other.headers) for _ in range(6)]
    cancel = api.delete(f"{API}/orders/{resting[0]['id']}", headers=other.headers)
    replace = send(
        api,
        "PATCH",
        f"{API}/orders/{resting[1]['id']}",
        '{"quantity": 5}',
        {**other.headers, "If-Match": "1"},
    )

    refused, *answers = await asyncio.gather(
        send(api, "POST", f"{API}/orders", bad, trader.headers), *good, cancel, replace
    )

    assert [a.status_code for a in answers] == [201] * 6 + [202, 202]
    assert_problem(refused, 422, code)
    assert await count_rows(engine, "client_order") == 3 + 6


@pytest.fixture
async def batcher(engine: AsyncEngine, redis: Redis) -> AsyncIterator[IntakeBatcher]:
    async for running in running_batcher(engine, redis, connections=1):
        yield running


async def test_the_batcher_refuses_an_unstorable_symbol_without_its_neighbours(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    """Orders built without `parse_new_order` (the market maker's) are checked too."""
    account = await new_account(engine, "100000.00")
    resting = await batcher.place(account, order("buy", 1))

    refused, placed, canceled = await asyncio.gather(
        batcher.place(account, replace(order("buy", 1), symbol="AA\ud800")),
        batcher.place(account, order("buy", 2)),
        batcher.cancel(CancelRequest(account, resting.order.id, None)),
        return_exceptions=True,
    )

    assert isinstance(refused, intake.UnknownSymbol)
    assert isinstance(placed, intake.Placement)
    assert isinstance(canceled, Amended)


async def test_an_error_of_a_cycle_s_orders_does_not_fail_its_cancels(
    engine: AsyncEngine, batcher: IntakeBatcher
) -> None:
    account = await new_account(engine, "100000.00")
    resting = await batcher.place(account, order("buy", 1))
    # Refused (unknown symbol), then looked up as a possible replay by a client_order_id
    # PostgreSQL cannot take (the HTTP layer refuses it): that lookup fails.
    poisoned = order("buy", 1, symbol="ZZZZ", client_order_id="\ud800")

    failed, canceled = await asyncio.gather(
        batcher.place(account, poisoned),
        batcher.cancel(CancelRequest(account, resting.order.id, None)),
        return_exceptions=True,
    )

    assert isinstance(failed, asyncpg.DataError)
    assert isinstance(canceled, Amended)


# --- 6. A path that names no order is 404 before anything else ---------------------------


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("PATCH", {}, '{"quantity": 5}'),
        ("PATCH", {"If-Match": "one"}, '{"quantity": 5}'),
        ("PATCH", {"If-Match": "1"}, "{not json"),
        ("PATCH", {"If-Match": "9" * 5000}, '{"quantity": 5}'),
        ("DELETE", {"If-Match": "one"}, ""),
    ],
    ids=["patch-no-if-match", "patch-bad-if-match", "patch-bad-body", "patch-huge", "delete"],
)
async def test_a_path_that_is_not_an_order_id_is_order_not_found_first(
    api: httpx.AsyncClient, trader: Trader, method: str, headers: dict[str, str], body: str
) -> None:
    response = await send(
        api, method, f"{API}/orders/not-an-id", body, {**trader.headers, **headers}
    )

    assert_problem(response, 404, "order_not_found")


async def test_an_order_id_of_no_order_still_checks_if_match_before_the_lookup(
    api: httpx.AsyncClient, trader: Trader
) -> None:
    """A well-formed id is looked up with the rest of the request (group commit): a
    missing If-Match answers 428 without a database round trip, as for any order."""
    path = f"{API}/orders/{NO_SUCH_ORDER}"
    missing = await send(api, "PATCH", path, '{"quantity": 5}', trader.headers)
    assert_problem(missing, 428, "precondition_required")
    found = await send(api, "PATCH", path, '{"quantity": 5}', {**trader.headers, "If-Match": "1"})
    assert_problem(found, 404, "order_not_found")
