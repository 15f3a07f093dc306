"""JWT access and MFA tokens (pyjwt). Refresh tokens are opaque and live in the database.

Every token carries `iss`, `aud`, `exp`, `iat`, `jti`, `sub` and `typ` (access | mfa);
decoding pins the algorithm, audience and issuer and requires every one of them, so
`alg: none`, a foreign signature, another audience or a token of the wrong type all fail.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt

TokenType = Literal["access", "mfa"]
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti", "sub", "typ"]
IAT_LEEWAY_SECONDS = 60  # clock skew tolerated between api processes


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong type."""


@dataclass(frozen=True, slots=True)
class TokenConfig:
    algorithm: Literal["HS256", "RS256"]
    signing_key: str  # HS256 secret, or RS256 private key (PEM)
    verifying_key: str  # HS256 secret, or RS256 public key (PEM)
    issuer: str
    audience: str
    access_ttl_seconds: int
    mfa_ttl_seconds: int


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: uuid.UUID
    token_type: TokenType
    session_id: uuid.UUID | None
    token_id: str
    expires_at: int


class TokenService:
    """Issues and verifies BrokerX JWTs. `clock` is injectable for tests."""

    def __init__(
        self, config: TokenConfig, clock: Any = time.time, *, memo_size: int = 50_000
    ) -> None:
        self._config = config
        self._clock = clock
        self._memo_size = memo_size
        self._verified: dict[str, TokenClaims] = {}

    @property
    def access_ttl_seconds(self) -> int:
        return self._config.access_ttl_seconds

    def _issue(self, subject: uuid.UUID, typ: TokenType, ttl: int, **extra: Any) -> str:
        now = int(self._clock())
        claims = {
            "iss": self._config.issuer,
            "aud": self._config.audience,
            "sub": str(subject),
            "typ": typ,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            **extra,
        }
        return jwt.encode(claims, self._config.signing_key, algorithm=self._config.algorithm)

    def issue_access(self, client_id: uuid.UUID, session_id: uuid.UUID) -> str:
        """A short-lived access token bound to a login session."""
        return self._issue(
            client_id, "access", self._config.access_ttl_seconds, sid=str(session_id)
        )

    def issue_mfa(self, client_id: uuid.UUID) -> str:
        """A short-lived token proving the password step passed; only MFA verify takes it."""
        return self._issue(client_id, "mfa", self._config.mfa_ttl_seconds)

    def decode_access(self, token: str) -> TokenClaims:
        """`decode(token, "access")`, remembering tokens already verified.

        Every request of a client carries the same access token until it expires, and
        verifying its signature is the dearest part of authenticating it. A remembered
        token is only re-checked for expiry; the memo holds at most `memo_size` tokens.
        """
        claims = self._verified.get(token)
        if claims is not None:
            if claims.expires_at > int(self._clock()):
                return claims
            del self._verified[token]
            raise InvalidToken("token expired")
        claims = self.decode(token, "access")
        if len(self._verified) >= self._memo_size:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def decode(self, token: str, expected_type: TokenType) -> TokenClaims:
        """Verify signature, algorithm, issuer, audience, expiry and type."""
        try:
            claims = jwt.decode(
                token,
                self._config.verifying_key,
                algorithms=[self._config.algorithm],
                audience=self._config.audience,
                issuer=self._config.issuer,
                options={"require": REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        # Expiry and issue time are checked against the injectable clock rather than the
        # wall clock (pyjwt would compare `iat` with time.time()).
        now = int(self._clock())
        try:
            expires_at, issued_at = int(claims["exp"]), int(claims["iat"])
        except (TypeError, ValueError) as exc:
            raise InvalidToken("malformed exp/iat") from exc
        if expires_at <= now:
            raise InvalidToken("token expired")
        if issued_at > now + IAT_LEEWAY_SECONDS:
            raise InvalidToken("token issued in the future")
        if claims.get("typ") != expected_type:
            raise InvalidToken("wrong token type")
        try:
            subject = uuid.UUID(str(claims["sub"]))
            session = uuid.UUID(str(claims["sid"])) if claims.get("sid") else None
        except ValueError as exc:
            raise InvalidToken("malformed subject") from exc
        if expected_type == "access" and session is None:
            raise InvalidToken("access token without session")
        return TokenClaims(subject, expected_type, session, str(claims["jti"]), expires_at)
