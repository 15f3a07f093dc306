"""Password hashing (argon2id parameters, rehash, non-blocking) and the sign-up policy."""

from __future__ import annotations

import asyncio

import pytest
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from pydantic import ValidationError

from brokerx_api.settings import ApiSettings
from brokerx_core.auth.passwords import (
    COMMON_PASSWORDS,
    OWASP_MIN_MEMORY_KIB,
    OWASP_MIN_TIME_COST,
    HashParameters,
    PasswordHashing,
    is_common_password,
    password_weakness,
)
from tests.support.argon2_calls import count_argon2_verifications

CHEAP = HashParameters(memory_kib=1024, time_cost=1, parallelism=1)


def test_production_defaults_meet_the_owasp_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PASSWORD_HASH_MEMORY_KIB", "PASSWORD_HASH_TIME_COST", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    params = ApiSettings(_env_file=None).password_hash_parameters  # type: ignore[call-arg]
    assert params.memory_kib >= 19 * 1024
    assert params.time_cost >= 2
    assert params.parallelism >= 1
    assert params.meets_owasp_minimum
    assert HashParameters().meets_owasp_minimum
    assert (OWASP_MIN_MEMORY_KIB, OWASP_MIN_TIME_COST) == (19 * 1024, 2)


def test_production_refuses_weaker_hashing() -> None:
    secrets = {
        "jwt_secret": "a-real-long-random-secret-0f9a8b7c",
        "totp_encryption_keys": Fernet.generate_key().decode(),
    }
    with pytest.raises(ValidationError, match="OWASP"):
        ApiSettings(environment="production", password_hash_memory_kib=1024, **secrets)
    with pytest.raises(ValidationError, match="OWASP"):
        ApiSettings(environment="production", password_hash_time_cost=1, **secrets)
    assert ApiSettings(environment="production", **secrets).environment == "production"


async def test_hashes_are_argon2id_with_the_configured_parameters() -> None:
    hashed = await PasswordHashing().hash("Sturdy-Falcon-42")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    other = await PasswordHashing().hash("Sturdy-Falcon-42")
    assert other != hashed  # salted


async def test_verify_accepts_the_password_and_nothing_else() -> None:
    hashing = PasswordHashing(CHEAP)
    hashed = await hashing.hash("Sturdy-Falcon-42")
    assert await hashing.verify(hashed, "Sturdy-Falcon-42")
    assert not await hashing.verify(hashed, "sturdy-falcon-42")
    assert not await hashing.verify(hashed, "")
    assert not await hashing.verify("not-a-hash", "Sturdy-Falcon-42")
    assert not await hashing.verify("$2b$12$abcdefghijklmnopqrstuv", "Sturdy-Falcon-42")


async def test_needs_rehash_when_the_parameters_change() -> None:
    old = await PasswordHashing(CHEAP).hash("Sturdy-Falcon-42")
    assert not PasswordHashing(CHEAP).needs_rehash(old)
    stronger = PasswordHashing(HashParameters(memory_kib=2048, time_cost=2, parallelism=1))
    assert stronger.needs_rehash(old)
    assert stronger.needs_rehash("not-a-hash")
    # A hash made by a plain argon2-cffi hasher with other settings also qualifies.
    assert stronger.needs_rehash(PasswordHasher(time_cost=1, memory_cost=1024).hash("x"))


async def test_hashing_does_not_block_the_event_loop() -> None:
    """While argon2 works (tens of ms at OWASP cost), other coroutines keep running."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    hashing = PasswordHashing(HashParameters(memory_kib=64 * 1024, time_cost=3))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(hashing.hash("Sturdy-Falcon-42") for _ in range(4)))
    elapsed = loop.time() - started
    stop.set()
    await task
    # A blocked loop would tick about once per hash; a free one ticks every millisecond.
    assert ticks >= min(10, int(elapsed * 1000) // 4), (ticks, elapsed)


async def test_verify_dummy_costs_a_real_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an unknown e-mail's login spends: one argon2id verification, against a hash
    made with the configured parameters, that argon2 computes and refuses (a mismatch,
    not a malformed hash answered at once)."""
    argon2 = count_argon2_verifications(monkeypatch)
    hashing = PasswordHashing(CHEAP)
    for password in ("anything", "", "Sturdy-Falcon-42"):
        await hashing.verify_dummy(password)  # never raises, whatever the input
        [verification] = argon2.take()
        assert verification.outcome == "mismatch"
        assert verification.password_hash.startswith(
            f"$argon2id$v=19$m={CHEAP.memory_kib},t={CHEAP.time_cost},p={CHEAP.parallelism}$"
        )
        assert not hashing.needs_rehash(verification.password_hash)


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Ab1defg", "at least 8"),
        ("alllowercase1", "upper-case"),
        ("ALLUPPERCASE1", "lower-case"),
        ("NoDigitsAtAll", "digit"),
        ("Password1", "common"),
        ("pASSWORD1", "common"),
        ("Password123!", "common"),
        ("Welcome2024!", "common"),
        ("P@ssw0rd1", "common"),
        ("Qwerty123", "common"),
        ("1Qaz2wsx", "common"),
        ("Letmein1", "common"),
        ("Iloveyou1", "common"),
        ("x" * 120 + "Aa1" + "y" * 10, "at most"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password: str, reason: str) -> None:
    weakness = password_weakness(password)
    assert weakness is not None
    assert reason in weakness


@pytest.mark.parametrize(
    "password", ["Sturdy-Falcon-42", "correctHorse7battery", "Zq8!vLm3pT", "Ünïcode-Pässw0rd"]
)
def test_strong_passwords_pass(password: str) -> None:
    assert password_weakness(password) is None


def test_the_common_list_is_a_real_list_of_rule_passing_passwords() -> None:
    assert len(COMMON_PASSWORDS) >= 150
    # Each would pass the character rules once capitalised: only the list stops it.
    for common in COMMON_PASSWORDS:
        if len(common) >= 8 and any(c.isdigit() for c in common):
            capitalised = common[0].upper() + common[1:]
            if any(c.isupper() for c in capitalised) and any(c.islower() for c in capitalised):
                assert is_common_password(capitalised)
                assert password_weakness(capitalised) is not None
