"""Fixed-window rate limits in Redis (INCR + EXPIRE), answering 429 with Retry-After."""

from __future__ import annotations

import hashlib
import math

from redis.asyncio import Redis

from brokerx_api.errors import RateLimited

KEY = "ratelimit:{bucket}:{identity}:{window}"


def identity_of(value: str) -> str:
    """A short stable digest of an identity (no e-mail addresses in Redis keys).

    Any string has one, even a lone surrogate (what JSON's `"\\ud800"` decodes to), which
    plain UTF-8 cannot encode.
    """
    identity = value.strip().lower().encode("utf-8", "surrogatepass")
    return hashlib.sha256(identity).hexdigest()[:32]


async def enforce_limit(
    redis: Redis,
    bucket: str,
    identity: str,
    *,
    limit: int,
    now: float,
    window_seconds: int = 60,
) -> None:
    """Count one attempt in the current window; raise RateLimited past `limit`.

    Windows are numbered from the (injectable) clock, so a test that advances the clock
    reaches a fresh window without waiting for Redis to expire the old key.
    """
    window = int(now // window_seconds)
    key = KEY.format(bucket=bucket, identity=identity, window=window)
    # A Redis outage propagates (503): unthrottled guessing is not an acceptable fallback.
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_seconds + 5)
        count, _ = await pipe.execute()
    if int(count) > limit:
        retry_after = max(1, math.ceil((window + 1) * window_seconds - now))
        raise RateLimited(
            f"Too many attempts; retry in {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
            extra={"retry_after": retry_after},
        )
