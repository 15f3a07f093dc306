"""TOTP secrets at rest: encrypted in PostgreSQL, legacy plain rows, key rotation, a wrong
key (503, nothing counted) and the `rekey` operator command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_api.auth.rekey import rekey
from brokerx_core.auth.secretbox import DEV_TOTP_ENCRYPTION_KEY, SecretBox
from tests.support.auth import (
    API,
    FakeClock,
    active_client,
    audit_actions,
    bearer,
    challenge,
    enrol_totp,
    logged_in,
    mfa_verify,
    running_api,
)
from tests.support.servers import ServerUrls

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def clock() -> FakeClock:
    # Mid-step, so "the next step" is unambiguous.
    start = FakeClock()
    start.now = (int(start.now) // 30) * 30 + 10
    return start


async def stored(engine: AsyncEngine, email: str) -> dict[str, Any]:
    """The client's TOTP columns and counters as PostgreSQL holds them."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT totp_secret, totp_pending_secret, failed_mfa_count, locked_until,"
                    " row_to_json(client)::text AS whole_row FROM client WHERE email = :e"
                ),
                {"e": email},
            )
        ).one()
    return dict(row._mapping)


async def set_totp_secret(engine: AsyncEngine, email: str, value: str) -> None:
    """Write a client's TOTP secret directly, as a release before encryption did."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE client SET mfa_method = 'totp', totp_secret = :v WHERE email = :e"),
            {"v": value, "e": email},
        )


async def logs_in_with_totp(api: httpx.AsyncClient, email: str, code: str) -> None:
    pending = await challenge(api, email)
    verified = await mfa_verify(api, pending["mfa_token"], code)
    assert verified.status_code == 200, verified.text
    me = await api.get(f"{API}/me", headers=bearer(verified.json()["access_token"]))
    assert me.status_code == 200


async def test_totp_secrets_are_stored_encrypted_and_login_still_works(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "cipher@example.com")
    tokens = await logged_in(api, "cipher@example.com")
    setup = await api.post(f"{API}/auth/mfa/totp/setup", headers=bearer(tokens["access_token"]))
    secret = setup.json()["secret"]
    pending = await stored(engine, "cipher@example.com")
    assert secret not in pending["whole_row"]
    assert pending["totp_pending_secret"].startswith("gAAAAA")
    assert SecretBox([DEV_TOTP_ENCRYPTION_KEY]).decrypt(pending["totp_pending_secret"]) == secret

    enabled = await api.post(
        f"{API}/auth/mfa/totp/enable",
        json={"code": pyotp.TOTP(secret).at(clock())},
        headers=bearer(tokens["access_token"]),
    )
    assert enabled.status_code == 200, enabled.text
    row = await stored(engine, "cipher@example.com")
    assert row["totp_pending_secret"] is None
    assert secret not in row["whole_row"]
    assert row["totp_secret"].startswith("gAAAAA")
    assert SecretBox([DEV_TOTP_ENCRYPTION_KEY]).decrypt(row["totp_secret"]) == secret
    async with engine.connect() as conn:
        audit = await conn.execute(text("SELECT details::text FROM audit_event"))
        assert all(secret not in details for (details,) in audit)

    clock.advance(30)
    await logs_in_with_totp(api, "cipher@example.com", pyotp.TOTP(secret).at(clock()))


async def test_a_legacy_plain_secret_works_until_rekey_encrypts_it(
    api: httpx.AsyncClient, engine: AsyncEngine, clock: FakeClock
) -> None:
    await active_client(api, engine, "legacy@example.com")
    secret = pyotp.random_base32()
    await set_totp_secret(engine, "legacy@example.com", secret)
    await logs_in_with_totp(api, "legacy@example.com", pyotp.TOTP(secret).at(clock()))
    # Logins read a legacy value but never rewrite it (a rollback could not read a token).
    assert (await stored(engine, "legacy@example.com"))["totp_secret"] == secret

    box = SecretBox([DEV_TOTP_ENCRYPTION_KEY])
    report = await rekey(engine, box)
    assert (report.rewritten, report.unchanged, report.undecryptable) == (1, 0, [])
    row = await stored(engine, "legacy@example.com")
    assert secret not in row["whole_row"]
    assert box.is_current(row["totp_secret"])
    assert box.decrypt(row["totp_secret"]) == secret
    again = await rekey(engine, box)
    assert (again.rewritten, again.unchanged) == (0, 1)

    clock.advance(30)
    await logs_in_with_totp(api, "legacy@example.com", pyotp.TOTP(secret).at(clock()))


async def test_key_rotation_new_key_first_then_rekey_then_old_key_dropped(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, clock: FakeClock
) -> None:
    async with running_api(servers, database_url, clock, totp_encryption_keys=OLD_KEY) as (
        _,
        api,
    ):
        await active_client(api, engine, "rotate@example.com")
        tokens = await logged_in(api, "rotate@example.com")
        totp = await enrol_totp(api, tokens["access_token"], clock)
    assert SecretBox([OLD_KEY]).is_current(
        (await stored(engine, "rotate@example.com"))["totp_secret"]
    )

    both = f"{NEW_KEY},{OLD_KEY}"
    async with running_api(servers, database_url, clock, totp_encryption_keys=both) as (_, api):
        clock.advance(30)
        await logs_in_with_totp(api, "rotate@example.com", totp.at(clock()))

    report = await rekey(engine, SecretBox.from_setting(both))
    assert report.rewritten == 1
    row = await stored(engine, "rotate@example.com")
    assert SecretBox([NEW_KEY]).decrypt(row["totp_secret"]) == totp.secret

    async with running_api(servers, database_url, clock, totp_encryption_keys=NEW_KEY) as (_, api):
        clock.advance(30)
        await logs_in_with_totp(api, "rotate@example.com", totp.at(clock()))


async def test_a_secret_no_key_decrypts_answers_503_and_counts_no_failure(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, clock: FakeClock
) -> None:
    async with running_api(servers, database_url, clock, totp_encryption_keys=OLD_KEY) as (
        _,
        api,
    ):
        await active_client(api, engine, "lost@example.com")
        tokens = await logged_in(api, "lost@example.com")
        totp = await enrol_totp(api, tokens["access_token"], clock)
        # A setup in progress, encrypted under the old key too.
        await api.post(f"{API}/auth/mfa/totp/setup", headers=bearer(tokens["access_token"]))

    clock.advance(30)
    # The old key went missing from TOTP_ENCRYPTION_KEYS.
    async with running_api(servers, database_url, clock, totp_encryption_keys=NEW_KEY) as (_, api):
        pending = await challenge(api, "lost@example.com")
        for _attempt in range(4):  # more than the 3 wrong codes that lock an account
            refused = await mfa_verify(api, pending["mfa_token"], totp.at(clock()))
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "service_unavailable"
            assert refused.headers["retry-after"] == "60"
        enable = await api.post(
            f"{API}/auth/mfa/totp/enable",
            json={"code": "123456"},
            headers=bearer(tokens["access_token"]),
        )
        assert enable.status_code == 503, enable.text
    row = await stored(engine, "lost@example.com")
    assert (row["failed_mfa_count"], row["locked_until"]) == (0, None)
    actions = await audit_actions(engine, "lost@example.com")
    assert actions.count("auth.mfa_unavailable") == 5
    assert "auth.mfa_failed" not in actions

    # The key is back: the same MFA token and code work, nothing was spent meanwhile.
    async with running_api(servers, database_url, clock, totp_encryption_keys=OLD_KEY) as (
        _,
        api,
    ):
        verified = await mfa_verify(api, pending["mfa_token"], totp.at(clock()))
        assert verified.status_code == 200, verified.text


async def _insert_client(engine: AsyncEngine, totp_secret: str, pending: str | None = None) -> str:
    client_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO client (id, email, password_hash, first_name, last_name,"
                " date_of_birth, address, status, mfa_method, totp_secret, totp_pending_secret)"
                " VALUES (:id, :email, 'x', 'A', 'B', '1990-01-01', 'addr', 'active', 'totp',"
                " :secret, :pending)"
            ),
            {
                "id": client_id,
                "email": f"{client_id}@example.com",
                "secret": totp_secret,
                "pending": pending,
            },
        )
    return str(client_id)


async def _secrets(engine: AsyncEngine) -> dict[str, tuple[str | None, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id::text, totp_secret, totp_pending_secret FROM client")
        )
        return {row[0]: (row[1], row[2]) for row in rows}


async def test_rekey_walks_every_row_and_leaves_undecryptable_ones(engine: AsyncEngine) -> None:
    plain = [pyotp.random_base32() for _ in range(5)]
    legacy = await _insert_client(engine, plain[0], pending=plain[1])
    old = await _insert_client(engine, SecretBox([OLD_KEY]).encrypt(plain[2]))
    current = await _insert_client(engine, SecretBox([NEW_KEY]).encrypt(plain[3]))
    foreign = SecretBox([Fernet.generate_key().decode()]).encrypt(plain[4])
    lost = await _insert_client(engine, foreign)

    box = SecretBox([NEW_KEY, OLD_KEY])
    report = await rekey(engine, box, batch_size=1)  # one row per transaction
    assert report.rewritten == 3
    assert report.unchanged == 1
    assert [(str(c), column) for c, column in report.undecryptable] == [(lost, "totp_secret")]
    rows = await _secrets(engine)
    new_only = SecretBox([NEW_KEY])
    assert tuple(new_only.decrypt(v or "") for v in rows[legacy]) == (plain[0], plain[1])
    assert new_only.decrypt(rows[old][0] or "") == plain[2]
    assert new_only.decrypt(rows[current][0] or "") == plain[3]
    assert rows[lost] == (foreign, None)

    back = await rekey(engine, box, plaintext=True)
    assert back.rewritten == 4
    rows = await _secrets(engine)
    assert rows[legacy] == (plain[0], plain[1])
    assert rows[old][0] == plain[2]
    assert rows[current][0] == plain[3]
    assert rows[lost] == (foreign, None)


def _run_rekey(
    database_url: str, keys: str, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TOTP_", "DATABASE_", "ENVIRONMENT"))
    }
    env.update({"DATABASE_URL": database_url, "TOTP_ENCRYPTION_KEYS": keys, "ENVIRONMENT": "test"})
    return subprocess.run(
        [sys.executable, "-m", "brokerx_api.auth.rekey", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_rekey_command_reports_and_exits_1_on_undecryptable_rows(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    secret = pyotp.random_base32()
    legacy = await _insert_client(engine, secret)
    lost = await _insert_client(engine, SecretBox([OLD_KEY]).encrypt(pyotp.random_base32()))

    done = _run_rekey(database_url, NEW_KEY, tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"UNDECRYPTABLE client {lost} totp_secret" in done.stdout
    assert "rekey: 1 rewritten, 0 already under the first key, 1 undecryptable" in done.stdout
    assert SecretBox([NEW_KEY]).decrypt((await _secrets(engine))[legacy][0] or "") == secret

    fixed = _run_rekey(database_url, f"{NEW_KEY} {OLD_KEY}", tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "rekey: 1 rewritten, 1 already under the first key, 0 undecryptable" in fixed.stdout

    refused = _run_rekey(database_url, "not-a-key", tmp_path)
    assert refused.returncode != 0
    assert "not a Fernet key" in refused.stderr
    assert "not-a-key" not in refused.stderr
