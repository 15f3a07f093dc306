"""FastAPI dependencies shared by every domain package (`SessionDep`, `RedisDep`, ...).

Every dependency is `async def`: FastAPI runs plain `def` dependencies in its threadpool,
a thread hop per dependency per request on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_api.settings import ApiSettings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: commit on success, roll back on error.

    `scope="function"` below makes the commit happen before the response is sent, so
    a client never sees a 201 for something that was not committed.
    """
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


async def _redis(request: Request) -> Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


async def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def client_ip(request: Request) -> str:
    """The caller's address (nginx sets X-Forwarded-For; we trust only its first hop)."""
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


async def correlation_id(request: Request) -> str:
    """The correlation id bound by RequestIdMiddleware."""
    return str(request.state.correlation_id)


SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
RedisDep = Annotated[Redis, Depends(_redis)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
ClientIpDep = Annotated[str, Depends(client_ip)]
CorrelationIdDep = Annotated[str, Depends(correlation_id)]
