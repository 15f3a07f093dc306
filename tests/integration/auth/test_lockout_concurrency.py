"""Lockouts hold under concurrency: a burst of guesses for one account decides at most
`login_max_failures` passwords (`mfa_max_failures` codes) per lock window, and a right
guess never answers differently from a wrong one while the account is locked.

argon2 runs in a thread pool, so without care every request of a burst passes the lock
check before the first verification ends. `GatedHashing` holds every verification at a
gate until the whole burst is in flight, which makes that worst case the test's case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.auth import totp as totp_module
from brokerx_core.auth.passwords import HashParameters, PasswordHashing
from tests.support.auth import (
    FakeClock,
    active_client,
    audit_actions,
    challenge,
    count_rows,
    enrol_totp,
    logged_in,
    login,
    mfa_verify,
)

EMAIL = "burst@example.com"
GUESSES = 30


class GatedHashing(PasswordHashing):
    """The app's hasher, but each verification waits at `gate` before argon2 runs, and
    `decided` records the outcome of every verification argon2 ran."""

    def __init__(self, params: HashParameters) -> None:
        super().__init__(params)
        self.gate = asyncio.Event()
        self.waiting = 0
        self.decided: list[bool] = []

    async def verify(self, password_hash: str, password: str) -> bool:
        self.waiting += 1
        await self.gate.wait()
        matched = await super().verify(password_hash, password)
        self.decided.append(matched)
        return matched


def gated_hashing(app: FastAPI) -> GatedHashing:
    hashing = GatedHashing(app.state.settings.password_hash_parameters)
    app.state.password_hashing = hashing
    return hashing


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for `condition`; go on regardless after `timeout` (the assertions then fail,
    and no request is left waiting at a gate)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)


class Answers:
    """Counts the requests of a burst that have been answered."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, request: Awaitable[httpx.Response]) -> httpx.Response:
        try:
            return await request
        finally:
            self.count += 1


async def test_a_burst_of_wrong_passwords_decides_five_and_the_right_one_gets_no_tokens(
    app_api: tuple[FastAPI, httpx.AsyncClient],
    engine: AsyncEngine,
    clock: FakeClock,
) -> None:
    app, api = app_api
    await active_client(api, engine, EMAIL)
    hashing = gated_hashing(app)
    answered = Answers()

    async def right_password_last() -> httpx.Response:
        # Sent once every wrong guess is answered or waiting for argon2.
        await until(lambda: hashing.waiting + answered.count == GUESSES)
        return await answered(login(api, EMAIL))

    async def open_gate_when_all_are_in() -> None:
        try:
            await until(lambda: hashing.waiting + answered.count == GUESSES + 1)
        finally:
            hashing.gate.set()

    *wrong, right, _ = await asyncio.gather(
        *(answered(login(api, EMAIL, f"Wrong-Pass-{i}")) for i in range(GUESSES)),
        right_password_last(),
        open_gate_when_all_are_in(),
    )

    verifications = hashing.decided
    assert 1 <= len(verifications) <= 5, f"{len(verifications)} passwords decided in one window"
    assert not any(verifications)
    assert {r.status_code for r in wrong} <= {401, 423}
    assert right.status_code == 423, right.text
    assert right.json()["code"] == "account_locked"
    assert int(right.headers["retry-after"]) == 900
    assert "access_token" not in right.text
    assert await count_rows(engine, "auth_session") == 0
    actions = await audit_actions(engine, EMAIL)
    assert actions.count("auth.login_failed") == len(verifications)
    assert actions.count("auth.account_locked") == 1

    clock.advance(901)
    assert (await login(api, EMAIL)).status_code == 200


async def test_a_right_password_decided_after_a_concurrent_guess_locked_answers_like_it(
    app_api: tuple[FastAPI, httpx.AsyncClient],
    engine: AsyncEngine,
) -> None:
    """The right password is counted first, the fifth attempt (wrong) locks the account
    while argon2 still runs for the right one: its answer must be the locked answer the
    wrong ones get, not tokens (which would tell a guesser the password)."""
    app, api = app_api
    await active_client(api, engine, EMAIL)
    hashing = gated_hashing(app)
    answered = Answers()

    right_task = asyncio.create_task(answered(login(api, EMAIL)))
    await until(lambda: hashing.waiting == 1)
    wrong_tasks = [
        asyncio.create_task(answered(login(api, EMAIL, f"Wrong-Pass-{i}"))) for i in range(5)
    ]
    await until(lambda: hashing.waiting + answered.count == 6)
    hashing.gate.set()
    right = await right_task
    wrong = await asyncio.gather(*wrong_tasks)

    assert len(hashing.decided) == 5
    assert right.status_code == 423, right.text
    assert [r.status_code for r in wrong] == [423] * 5
    assert right.json() == wrong[-1].json()
    assert right.headers["retry-after"] == wrong[-1].headers["retry-after"]
    assert await count_rows(engine, "auth_session") == 0
    actions = await audit_actions(engine, EMAIL)
    assert actions.count("auth.account_locked") == 1
    assert "auth.login_succeeded" not in actions


@pytest.fixture
def totp_clock(clock: FakeClock) -> FakeClock:
    # Mid-step, so "the next step" is unambiguous.
    clock.now = (int(clock.now) // 30) * 30 + 10
    return clock


async def test_a_burst_of_wrong_totp_codes_decides_three_and_the_right_one_gets_no_tokens(
    api: httpx.AsyncClient,
    engine: AsyncEngine,
    totp_clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = totp_clock
    await active_client(api, engine, EMAIL)
    tokens = await logged_in(api, EMAIL)
    totp: pyotp.TOTP = await enrol_totp(api, tokens["access_token"], clock)
    clock.advance(30)
    mfa_token = (await challenge(api, EMAIL))["mfa_token"]
    now = clock()
    right_code = totp.at(now)
    valid = {totp.at(now + drift) for drift in (-30, 0, 30)}
    wrong_codes = [
        code
        for code in (f"{(int(right_code) + i) % 10**6:06d}" for i in range(1, GUESSES + 4))
        if code not in valid
    ][:GUESSES]

    decided: list[str] = []
    real_accepted_step = totp_module.accepted_step

    def counting_accepted_step(
        secret: str, code: str, at: float, last_step: int | None
    ) -> int | None:
        decided.append(code)
        return real_accepted_step(secret, code, at, last_step)

    monkeypatch.setattr(totp_module, "accepted_step", counting_accepted_step)
    answered = Answers()

    async def right_code_last() -> httpx.Response:
        # Sent once the account should be locked: three codes decided (or all answered).
        await until(lambda: len(decided) >= 3 or answered.count == GUESSES)
        return await mfa_verify(api, mfa_token, right_code)

    *wrong, right = await asyncio.gather(
        *(answered(mfa_verify(api, mfa_token, code)) for code in wrong_codes),
        right_code_last(),
    )

    assert 1 <= len(decided) <= 3, f"{len(decided)} codes decided in one window"
    assert right_code not in decided
    assert {r.status_code for r in wrong} <= {401, 423}
    assert right.status_code == 423, right.text
    assert right.json()["code"] == "account_locked"
    assert "access_token" not in right.text
    actions = await audit_actions(engine, EMAIL)
    assert actions.count("auth.mfa_failed") == len(decided)
    assert actions.count("auth.account_locked") == 1
    assert "auth.mfa_succeeded" not in actions
