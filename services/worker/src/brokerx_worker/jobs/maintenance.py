"""Housekeeping: purge expired one-time codes and dead refresh tokens."""

from __future__ import annotations

from typing import Any

from arq import cron
from sqlalchemy import text

from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

# Kept a day past expiry so support can still see why a code was refused.
PURGE_GRACE = "1 day"


async def purge_expired_credentials(ctx: dict[str, Any]) -> dict[str, int]:
    """Delete one-time codes and refresh tokens expired for more than a day (idempotent)."""
    async with ctx["sessionmaker"]() as session, session.begin():
        codes = await session.execute(
            text(
                f"DELETE FROM verification_code WHERE expires_at < now() - interval '{PURGE_GRACE}'"
            )
        )
        tokens = await session.execute(
            text(f"DELETE FROM refresh_token WHERE expires_at < now() - interval '{PURGE_GRACE}'")
        )
    result = {"codes": codes.rowcount or 0, "refresh_tokens": tokens.rowcount or 0}  # type: ignore[attr-defined]
    log.info("credentials_purged", **result)
    return result


FUNCTIONS: list[Any] = [purge_expired_credentials]
CRON_JOBS: list[Any] = [cron(purge_expired_credentials, hour={3}, minute={30}, unique=True)]
BACKGROUND_TASKS: list[Any] = []
