"""Everything an auth or onboarding operation needs, gathered once per request.

`AuthContext` carries the request's database session, Redis, the arq pool, settings,
token service, password hasher, TOTP secret box, clock and the caller (ip, user agent,
correlation id) so services take one argument instead of nine, and every audit event is
complete.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_api.auth.clock import Clock, ClockDep, utc
from brokerx_api.auth.deps import PasswordHashingDep, TokenServiceDep, session_cache, totp_box
from brokerx_api.auth.session_cache import LocalSessionCache
from brokerx_api.auth.throttle import enforce_limit
from brokerx_api.deps import (
    ClientIpDep,
    CorrelationIdDep,
    RedisDep,
    SessionDep,
    SettingsDep,
)
from brokerx_api.settings import ApiSettings
from brokerx_core.audit import record_audit
from brokerx_core.auth.passwords import PasswordHashing
from brokerx_core.auth.secretbox import SecretBox
from brokerx_core.auth.tokens import TokenService


@dataclass(frozen=True, slots=True)
class CallerContext:
    ip: str
    user_agent: str | None
    correlation_id: str


async def caller_context(
    request: Request, ip: ClientIpDep, correlation_id: CorrelationIdDep
) -> CallerContext:
    """The caller's address, user agent and correlation id."""
    return CallerContext(
        ip=ip, user_agent=request.headers.get("user-agent"), correlation_id=correlation_id
    )


CallerDep = Annotated[CallerContext, Depends(caller_context)]


@dataclass(frozen=True, slots=True)
class AuthContext:
    db: AsyncSession
    redis: Redis
    arq: Any
    settings: ApiSettings
    tokens: TokenService
    hashing: PasswordHashing
    clock: Clock
    caller: CallerContext
    session_cache: LocalSessionCache
    totp_box: SecretBox

    def now(self) -> datetime:
        """The current time by the app clock (aware UTC)."""
        return utc(self.clock())

    @property
    def code_secret(self) -> str:
        """Key of the HMAC that protects stored one-time codes."""
        return str(self.settings.jwt_secret.get_secret_value())

    async def audit(self, action: str, client_id: uuid.UUID | None, **details: Any) -> None:
        """Record an audit event in the request's transaction."""
        await record_audit(
            self.db,
            action,
            client_id,
            self.caller.ip,
            self.caller.user_agent,
            self.caller.correlation_id,
            **details,
        )

    async def throttle(self, bucket: str, identity: str, limit: int) -> None:
        """Count an attempt against a per-minute limit (429 `rate_limited` past it)."""
        await enforce_limit(self.redis, bucket, identity, limit=limit, now=self.clock())


async def auth_context(
    request: Request,
    db: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
    tokens: TokenServiceDep,
    hashing: PasswordHashingDep,
    clock: ClockDep,
    caller: CallerDep,
) -> AuthContext:
    """Build the request's AuthContext."""
    return AuthContext(
        db=db,
        redis=redis,
        arq=request.app.state.arq,
        settings=settings,
        tokens=tokens,
        hashing=hashing,
        clock=clock,
        caller=caller,
        session_cache=session_cache(request.app),
        totp_box=totp_box(request.app),
    )


AuthContextDep = Annotated[AuthContext, Depends(auth_context)]
