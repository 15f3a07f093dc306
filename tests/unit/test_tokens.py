"""JWTs (TokenService: pinned algorithm, claims, clock), TOTP steps and e-mailed codes."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pyotp
import pytest

from brokerx_api.auth import totp
from brokerx_api.auth.deps import token_service_from
from brokerx_api.settings import ApiSettings
from brokerx_core.auth.otp import generate_code, hash_code
from brokerx_core.auth.tokens import InvalidToken, TokenConfig, TokenService

SECRET = "unit-test-secret-that-is-long-enough-0123"
CLIENT = uuid.uuid4()
SESSION = uuid.uuid4()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> TokenService:
    config = TokenConfig("HS256", SECRET, SECRET, "brokerx", "brokerx-api", 900, 300)
    return TokenService(config, clock=clock)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def test_access_token_carries_every_claim_and_decodes(service: TokenService, clock: Clock) -> None:
    token = service.issue_access(CLIENT, SESSION)
    body = claims(token)
    assert {"iss", "aud", "exp", "iat", "jti", "sub", "typ", "sid"} <= set(body)
    assert body["exp"] - body["iat"] == 900
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = service.decode(token, "access")
    assert (decoded.subject, decoded.session_id, decoded.token_type) == (CLIENT, SESSION, "access")
    assert service.issue_access(CLIENT, SESSION) != token  # unique jti


def _without(body: dict[str, Any], claim: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != claim}


# Each forgery from the claims of a genuine access token.
FORGERIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "alg none": lambda body: f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}.",
    "other secret": lambda body: jwt.encode(body, "x" * 40, "HS256"),
    "other algorithm": lambda body: jwt.encode(body, SECRET * 2, "HS512"),
    "other audience": lambda body: jwt.encode({**body, "aud": "elsewhere"}, SECRET, "HS256"),
    "other issuer": lambda body: jwt.encode({**body, "iss": "evil"}, SECRET, "HS256"),
    "no jti": lambda body: jwt.encode(_without(body, "jti"), SECRET, "HS256"),
    "no exp": lambda body: jwt.encode(_without(body, "exp"), SECRET, "HS256"),
    "bad sub": lambda body: jwt.encode({**body, "sub": "admin"}, SECRET, "HS256"),
    "from the future": lambda body: jwt.encode(
        {**body, "iat": body["iat"] + 3600}, SECRET, "HS256"
    ),
    "garbage": lambda body: "a.b.c",
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_forged_tokens_are_refused(service: TokenService, forgery: str) -> None:
    body = claims(service.issue_access(CLIENT, SESSION))
    token = FORGERIES[forgery](body)
    with pytest.raises(InvalidToken):
        service.decode(token, "access")
    with pytest.raises(InvalidToken):
        service.decode_access(token)


def test_expiry_follows_the_injected_clock(service: TokenService, clock: Clock) -> None:
    token = service.issue_access(CLIENT, SESSION)
    clock.now += 899
    service.decode(token, "access")
    clock.now += 1
    with pytest.raises(InvalidToken, match="expired"):
        service.decode(token, "access")


def test_a_token_issued_by_a_clock_ahead_of_the_wall_clock_is_valid(
    service: TokenService, clock: Clock
) -> None:
    clock.now = 4_000_000_000.0  # year 2096: pyjwt's own iat check would refuse this
    token = service.issue_access(CLIENT, SESSION)
    assert service.decode(token, "access").subject == CLIENT


def test_token_types_are_not_interchangeable(service: TokenService) -> None:
    mfa = service.issue_mfa(CLIENT)
    with pytest.raises(InvalidToken):
        service.decode(mfa, "access")
    with pytest.raises(InvalidToken):
        service.decode(service.issue_access(CLIENT, SESSION), "mfa")
    assert service.decode(mfa, "mfa").subject == CLIENT
    assert claims(mfa)["exp"] - claims(mfa)["iat"] == 300


def test_the_app_builds_its_token_service_from_settings(clock: Clock) -> None:
    settings = ApiSettings(jwt_secret=SECRET, access_token_ttl_seconds=120)
    service = token_service_from(settings, clock=clock)
    body = claims(service.issue_access(CLIENT, SESSION))
    assert (body["iss"], body["aud"], body["exp"] - body["iat"]) == ("brokerx", "brokerx-api", 120)
    assert body["iat"] == int(clock.now)


def test_totp_accepts_the_current_and_adjacent_steps_once() -> None:
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret)
    now = 1_700_000_015.0
    step = int(now // 30)
    assert totp.accepted_step(secret, code.at(now), now, None) == step
    assert totp.accepted_step(secret, code.at(now - 30), now, None) == step - 1
    assert totp.accepted_step(secret, code.at(now + 30), now, None) == step + 1
    assert totp.accepted_step(secret, code.at(now - 60), now, None) is None
    # Replay: a step at or before the last accepted one is refused.
    assert totp.accepted_step(secret, code.at(now), now, step) is None
    assert totp.accepted_step(secret, code.at(now - 30), now, step - 1) is None
    assert totp.accepted_step(secret, code.at(now + 30), now, step) == step + 1
    for malformed in ("", "12345", "1234567", "abcdef", " 12 34 "):
        assert totp.accepted_step(secret, malformed, now, None) is None


def test_provisioning_uri_names_the_issuer_and_account() -> None:
    secret = totp.new_secret()
    assert len(secret) >= 32  # 160 bits
    uri = totp.provisioning_uri(secret, "ada@example.com")
    assert uri.startswith("otpauth://totp/BrokerX:ada%40example.com?")
    assert f"secret={secret}" in uri
    assert "issuer=BrokerX" in uri


def test_emailed_codes_are_six_digits_and_hashed_per_client_and_purpose() -> None:
    codes = {generate_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150
    first = hash_code("k", CLIENT, "email_verification", "123456")
    assert first == hash_code("k", CLIENT, "email_verification", "123456")
    assert "123456" not in first
    assert first != hash_code("k", uuid.uuid4(), "email_verification", "123456")
    assert first != hash_code("k", CLIENT, "mfa_login", "123456")
    assert first != hash_code("other-key", CLIENT, "email_verification", "123456")


def test_a_remembered_access_token_still_expires(service: TokenService, clock: Clock) -> None:
    token = service.issue_access(CLIENT, SESSION)
    assert service.decode_access(token).session_id == SESSION
    clock.now += 899
    assert service.decode_access(token).subject == CLIENT  # from the memo
    clock.now += 1
    with pytest.raises(InvalidToken):
        service.decode_access(token)


def test_the_memo_never_admits_what_verification_refuses(service: TokenService) -> None:
    token = service.issue_access(CLIENT, SESSION)
    service.decode_access(token)
    header, payload, signature = token.split(".")
    forged = ".".join((header, b64({**claims(token), "sub": str(uuid.uuid4())}), signature))
    mfa = service.issue_mfa(CLIENT)
    for refused in (forged, mfa, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")):
        with pytest.raises(InvalidToken):
            service.decode_access(refused)
    assert service.decode_access(token).subject == CLIENT
