"""RS256 tokens (JWT_ALGORITHM=RS256): issued with the private key, verified with the public."""

from __future__ import annotations

import hashlib
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from brokerx_core.auth.tokens import InvalidToken, TokenConfig, TokenService


@pytest.fixture(scope="module")
def key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _service(private: str, public: str) -> TokenService:
    return TokenService(
        TokenConfig(
            algorithm="RS256",
            signing_key=private,
            verifying_key=public,
            issuer="brokerx",
            audience="brokerx-api",
            access_ttl_seconds=900,
            mfa_ttl_seconds=300,
        )
    )


def test_rs256_round_trip(key_pair: tuple[str, str]) -> None:
    service = _service(*key_pair)
    client, session = uuid.uuid4(), uuid.uuid4()
    claims = service.decode(service.issue_access(client, session), "access")
    assert (claims.subject, claims.session_id) == (client, session)


def test_rs256_refuses_hs256_signed_with_the_public_key(key_pair: tuple[str, str]) -> None:
    """Algorithm confusion: a token 'signed' with the public key as an HMAC secret."""
    private, public = key_pair
    service = _service(private, public)
    genuine = jwt.decode(
        service.issue_access(uuid.uuid4(), uuid.uuid4()),
        public,
        algorithms=["RS256"],
        audience="brokerx-api",
    )
    # pyjwt refuses to use a PEM as an HMAC secret, so sign with its bytes' digest:
    # whatever the secret, an HS256 token must be refused when RS256 is pinned.
    forged = jwt.encode(genuine, hashlib.sha256(public.encode()).hexdigest(), algorithm="HS256")
    with pytest.raises(InvalidToken):
        service.decode(forged, "access")
