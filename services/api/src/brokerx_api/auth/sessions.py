"""Login sessions: opening one (tokens), rotating its refresh token, revoking it.

Refresh tokens are opaque random strings; only their SHA-256 is stored. Each is spent
on first use and replaced. Presenting a spent one means two parties hold the session's
tokens (one of them stole it), so the whole session is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.exceptions import RedisError

from brokerx_api.auth import repository
from brokerx_api.auth.context import AuthContext
from brokerx_api.auth.deps import SESSION_CACHE_KEY
from brokerx_api.auth.errors import TokenRejected
from brokerx_api.auth.session_cache import publish_revocation
from brokerx_api.clients import repository as clients
from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int


def hash_refresh_token(token: str) -> str:
    """SHA-256 (hex) of a refresh token: what the database keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


async def _new_refresh_token(
    ctx: AuthContext, session_id: uuid.UUID, now: datetime, expires_at: datetime
) -> str:
    token = secrets.token_urlsafe(32)
    await repository.add_refresh_token(
        ctx.db, session_id, hash_refresh_token(token), now, expires_at
    )
    return token


async def open_session(ctx: AuthContext, client_id: uuid.UUID, now: datetime) -> IssuedTokens:
    """A new session for an authenticated client, with its first access/refresh pair.

    The session lives at most `refresh_token_ttl_seconds` from login; rotating the
    refresh token does not extend it (a stolen session cannot be kept alive forever).
    """
    expires_at = now + timedelta(seconds=ctx.settings.refresh_token_ttl_seconds)
    session_id = await repository.create_session(
        ctx.db,
        client_id=client_id,
        now=now,
        expires_at=expires_at,
        ip=ctx.caller.ip,
        user_agent=ctx.caller.user_agent,
    )
    refresh = await _new_refresh_token(ctx, session_id, now, expires_at)
    access = ctx.tokens.issue_access(client_id, session_id)
    return IssuedTokens(access, refresh, ctx.tokens.access_ttl_seconds)


async def mark_revoked(ctx: AuthContext, session_id: uuid.UUID) -> None:
    """Make `CurrentClient` refuse the session's access tokens at once (call after commit):
    here, in Redis, then in every api process's memo (auth/session_cache.py). Redis is
    written before the broadcast so that no process re-reads the old answer from it."""
    ctx.session_cache.drop(session_id)
    try:
        await ctx.redis.set(
            SESSION_CACHE_KEY.format(session_id=session_id),
            "revoked",
            # Past this, every access token of the session has expired anyway.
            ex=max(ctx.settings.session_cache_seconds, ctx.settings.access_token_ttl_seconds),
        )
    except RedisError:
        # The database already says revoked; a stale cache entry expires within seconds.
        log.warning("session_cache_unavailable", session_id=str(session_id))
        return
    await publish_revocation(ctx.redis, session_id)


async def rotate_refresh_token(ctx: AuthContext, refresh_token: str) -> IssuedTokens:
    """Spend `refresh_token` and issue a new pair in the same session, or 401."""
    now = ctx.now()
    token_hash = hash_refresh_token(refresh_token)
    spent = await repository.spend_refresh_token(ctx.db, token_hash, now)
    if spent is None:
        reused_session = await repository.session_of_spent_token(ctx.db, token_hash)
        if reused_session is not None:
            await _revoke_after_reuse(ctx, reused_session, now)
        raise TokenRejected("Invalid or expired refresh token")
    client = await clients.get_by_id(ctx.db, spent.client_id)
    if (
        spent.session_revoked
        or spent.expires_at <= now
        or spent.session_expires_at <= now
        or client is None
        or client.status != "active"
    ):
        raise TokenRejected("Invalid or expired refresh token")
    refresh = await _new_refresh_token(ctx, spent.session_id, now, spent.session_expires_at)
    await repository.touch_session(ctx.db, spent.session_id, now)
    access = ctx.tokens.issue_access(spent.client_id, spent.session_id)
    return IssuedTokens(access, refresh, ctx.tokens.access_ttl_seconds)


async def _revoke_after_reuse(ctx: AuthContext, session_id: uuid.UUID, now: datetime) -> None:
    revoked = await repository.revoke_session(ctx.db, session_id, now, "refresh_reuse")
    client_id, was_live = revoked if revoked else (None, False)
    await ctx.audit(
        "auth.refresh_token_reused", client_id, session_id=session_id, session_revoked=was_live
    )
    # The request fails, but the revocation and its audit event must stay.
    await ctx.db.commit()
    await mark_revoked(ctx, session_id)
    log.warning("refresh_token_reused", session_id=str(session_id))


async def logout(ctx: AuthContext, client_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """Revoke the caller's session: its access and refresh tokens stop working now."""
    await repository.revoke_session(ctx.db, session_id, ctx.now(), "logout")
    await ctx.audit("auth.logout", client_id, session_id=session_id)
    await ctx.db.commit()
    await mark_revoked(ctx, session_id)
