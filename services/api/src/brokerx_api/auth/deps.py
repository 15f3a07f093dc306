"""`CurrentClient`: the authenticated client of a request (Bearer access token)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.exceptions import RedisError
from sqlalchemy import text

from brokerx_api.auth.clock import Clock, app_clock
from brokerx_api.auth.session_cache import LocalSessionCache
from brokerx_api.errors import Unauthorized
from brokerx_api.settings import ApiSettings
from brokerx_core.auth.passwords import PasswordHashing
from brokerx_core.auth.secretbox import SecretBox
from brokerx_core.auth.tokens import InvalidToken, TokenConfig, TokenService

SESSION_CACHE_KEY = "auth:session:{session_id}"
_LIVE_SESSION = text(
    "SELECT a.id FROM auth_session s JOIN client c ON c.id = s.client_id"
    " JOIN account a ON a.client_id = c.id"
    " WHERE s.id = :sid AND s.client_id = :cid AND s.revoked_at IS NULL"
    " AND s.expires_at > now() AND c.status = 'active'"
)


@dataclass(frozen=True, slots=True)
class AuthenticatedClient:
    client_id: uuid.UUID
    session_id: uuid.UUID
    account_id: uuid.UUID


def token_service_from(settings: ApiSettings, clock: Clock = time.time) -> TokenService:
    """Build the token service from settings (HS256 secret or RS256 key pair)."""
    if settings.jwt_algorithm == "RS256":
        if settings.jwt_private_key is None or settings.jwt_public_key is None:
            raise ValueError("RS256 needs JWT_PRIVATE_KEY and JWT_PUBLIC_KEY")
        signing = settings.jwt_private_key.get_secret_value()
        verifying = settings.jwt_public_key
    else:
        signing = verifying = settings.jwt_secret.get_secret_value()
    return TokenService(
        TokenConfig(
            algorithm=settings.jwt_algorithm,
            signing_key=signing,
            verifying_key=verifying,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl_seconds=settings.access_token_ttl_seconds,
            mfa_ttl_seconds=settings.mfa_token_ttl_seconds,
        ),
        clock=clock,
    )


def get_token_service(request: Request) -> TokenService:
    """The app's token service (built once, replaceable in tests for a fake clock)."""
    service = getattr(request.app.state, "token_service", None)
    if service is None:
        app = request.app
        # Tokens expire by the app clock, so tests that move time expire them too.
        service = token_service_from(app.state.settings, clock=lambda: app_clock(app)())
        app.state.token_service = service
    return service  # type: ignore[no-any-return]


async def _token_service(request: Request) -> TokenService:
    # An async dependency: a plain `def` one would cost a threadpool hop per request.
    return get_token_service(request)


TokenServiceDep = Annotated[TokenService, Depends(_token_service)]


async def get_password_hashing(request: Request) -> PasswordHashing:
    """The app's argon2id hasher, with the parameters of its settings (built once)."""
    hashing = getattr(request.app.state, "password_hashing", None)
    if hashing is None:
        hashing = PasswordHashing(request.app.state.settings.password_hash_parameters)
        request.app.state.password_hashing = hashing
    return hashing


PasswordHashingDep = Annotated[PasswordHashing, Depends(get_password_hashing)]


def totp_box(app: Any) -> SecretBox:
    """The box of the app's TOTP_ENCRYPTION_KEYS (built once)."""
    box = getattr(app.state, "totp_box", None)
    if box is None:
        box = app.state.settings.totp_box()
        app.state.totp_box = box
    return box  # type: ignore[no-any-return]


def bearer_token(request: Request) -> str:
    """The raw Bearer token of the request, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def session_cache(app: Any) -> LocalSessionCache:
    """The process's in-process session memo (created on first use)."""
    cache = getattr(app.state, "session_cache", None)
    if cache is None:
        cache = LocalSessionCache(app.state.settings.session_local_cache_seconds)
        app.state.session_cache = cache
    return cache  # type: ignore[no-any-return]


async def session_account(
    request: Request, client_id: uuid.UUID, session_id: uuid.UUID, *, memo: bool = True
) -> uuid.UUID | None:
    """The account id when the session is live, else None.

    Looked up in this process's memo (unless `memo` is false), then Redis, then
    PostgreSQL; see `session_cache` for how revocations reach every process at once.
    With Redis unreachable the check goes to PostgreSQL instead of failing.
    """
    memo_cache = session_cache(request.app)
    if memo:
        hit, account = memo_cache.get(session_id)
        if hit:
            return account
    redis = request.app.state.redis
    settings: ApiSettings = request.app.state.settings
    key = SESSION_CACHE_KEY.format(session_id=session_id)
    redis_up = True
    try:
        cached = await redis.get(key)
    except RedisError:
        cached, redis_up = None, False
    if cached is not None:
        value = cached.decode() if isinstance(cached, bytes) else str(cached)
        account_id = None if value == "revoked" else uuid.UUID(value)
        memo_cache.put(session_id, account_id)
        return account_id
    async with request.app.state.sessionmaker() as session:
        row = (await session.execute(_LIVE_SESSION, {"sid": session_id, "cid": client_id})).first()
    account_id = row[0] if row else None
    if redis_up:
        try:
            await redis.set(
                key, str(account_id) if account_id else "revoked", ex=settings.session_cache_seconds
            )
        except RedisError:
            pass
    memo_cache.put(session_id, account_id)
    return account_id


async def current_client(request: Request) -> AuthenticatedClient:
    """Authenticate the request's access token against a live session, or 401.

    One dependency with no sub-dependencies: it runs on every authenticated request.
    """
    try:
        claims = get_token_service(request).decode_access(bearer_token(request))
    except InvalidToken as exc:
        raise Unauthorized(
            "Invalid or expired token", headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    assert claims.session_id is not None
    account_id = await session_account(request, claims.subject, claims.session_id)
    if account_id is None:
        raise Unauthorized("Session revoked or expired", headers={"WWW-Authenticate": "Bearer"})
    return AuthenticatedClient(claims.subject, claims.session_id, account_id)


CurrentClient = Annotated[AuthenticatedClient, Depends(current_client)]
