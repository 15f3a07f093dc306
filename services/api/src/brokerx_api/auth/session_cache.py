"""The session check's in-process layer: a short-lived memo of "session → account", with
revocations broadcast to every api process over Redis pub/sub.

Every authenticated request asks whether its session is still live. The answer is kept
three ways, fastest first: in this process for `SESSION_LOCAL_CACHE_SECONDS` (default
2 s), in Redis for `SESSION_CACHE_SECONDS`, and in PostgreSQL (the truth). A revocation
(logout, refresh-token reuse) drops the entry here at once, writes "revoked" to Redis and
publishes the session id on `auth:session:revoked`; each api process's
`RevocationListener` drops it too, within milliseconds. A listener that lost its
subscription forgets everything it memoised (it may have missed a revocation), so the
worst case is a revocation seen `SESSION_LOCAL_CACHE_SECONDS` late by another process
while Redis itself is unreachable.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from brokerx_core.observability.logging import get_logger

log = get_logger(__name__)

REVOKED_CHANNEL = "auth:session:revoked"
_MISS = (False, None)


class LocalSessionCache:
    """session id → account id (or None for a dead session), each for `ttl` seconds."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[uuid.UUID, tuple[uuid.UUID | None, float]] = {}

    def get(self, session_id: uuid.UUID) -> tuple[bool, uuid.UUID | None]:
        """(True, account id or None) when memoised and fresh, else (False, None)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return _MISS
        if entry[1] <= self._clock():
            self._entries.pop(session_id, None)
            return _MISS
        return True, entry[0]

    def put(self, session_id: uuid.UUID, account_id: uuid.UUID | None) -> None:
        if self.ttl <= 0:
            return
        now = self._clock()
        if len(self._entries) >= self._max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
        self._entries[session_id] = (account_id, now + self.ttl)

    def drop(self, session_id: uuid.UUID) -> None:
        self._entries.pop(session_id, None)

    def clear(self) -> None:
        self._entries.clear()


async def publish_revocation(redis: Redis, session_id: uuid.UUID) -> None:
    """Tell every api process to forget `session_id` (best effort: the TTL bounds staleness)."""
    try:
        await redis.publish(REVOKED_CHANNEL, str(session_id))
    except RedisError:
        log.warning("session_revocation_not_broadcast", session_id=str(session_id))


class RevocationListener:
    """Drops revoked sessions from a `LocalSessionCache` as their ids are published."""

    def __init__(self, redis: Redis, cache: LocalSessionCache, retry_seconds: float = 1.0):
        self._redis = redis
        self._cache = cache
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="session-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(REVOKED_CHANNEL)
                # Anything memoised before now may have been revoked while we were deaf.
                self._cache.clear()
                self.subscribed.set()
                async for message in pubsub.listen():
                    self._forget(message.get("data"))
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                self._cache.clear()
                log.warning("session_revocations_unavailable", error=str(exc))
                await asyncio.sleep(self._retry_seconds)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    def _forget(self, data: object) -> None:
        raw = data.decode() if isinstance(data, bytes) else str(data)
        try:
            self._cache.drop(uuid.UUID(raw))
        except ValueError:
            log.warning("session_revocation_malformed", data=raw[:80])
