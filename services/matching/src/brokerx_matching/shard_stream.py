"""The Redis side of one shard's command stream `orders.<shard>` and its group.

Reading new entries (XREADGROUP, on the shard's own connection: redis_link.py), claiming
pending ones (XAUTOCLAIM, or XCLAIM … JUSTID when a delivery must not be counted), the
delivery counts of claimed entries, and housekeeping (lag gauges, trimming below what
the group acknowledged). What to do with the entries is the consumer's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import MATCHING_GROUP
from brokerx_matching import metrics
from brokerx_matching.pipeline import REDIS_DOWN
from brokerx_matching.redis_link import RedisLink
from brokerx_matching.settings import MatchingSettings

log = get_logger(__name__)

Entry = tuple[bytes, dict[bytes, bytes] | None]
Cursor = bytes | str
_DONE = (b"0-0", "0-0")


class RecoveryNeeded(Exception):
    """The stream or its group vanished (Redis flushed): rebuild and start over."""


def is_nogroup(exc: BaseException) -> bool:
    """The group is gone, or the stream was deleted while we blocked on it (flush)."""
    return isinstance(exc, ResponseError) and any(
        marker in str(exc) for marker in ("NOGROUP", "UNBLOCKED")
    )


class ShardStream:
    def __init__(
        self, stream: str, redis: Any, link: RedisLink, settings: MatchingSettings
    ) -> None:
        self.stream = stream
        self.redis = redis  # the shared client
        self.link = link  # the shard's own connection
        self.settings = settings
        self.consumer = settings.consumer

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, MATCHING_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self) -> list[Entry]:
        """Up to `batch_size` new entries, waiting up to `block_ms` for the first."""
        settings = self.settings
        try:
            response = await self.link.execute(
                "XREADGROUP",
                "GROUP",
                MATCHING_GROUP,
                self.consumer,
                "COUNT",
                settings.batch_size,
                "BLOCK",
                settings.block_ms,
                "STREAMS",
                self.stream,
                ">",
            )
        except ResponseError as exc:
            if is_nogroup(exc):
                raise RecoveryNeeded(self.stream) from exc
            raise
        if not response:  # timed out
            return []
        return [
            (entry_id, dict(zip(fields[::2], fields[1::2], strict=True)) if fields else None)
            for entry_id, fields in response[0][1]
        ]

    async def claim(self, cursor: Cursor, count: int) -> tuple[Cursor, list[Entry]]:
        """Pending entries of the group from `cursor` on, whoever holds them (counts a
        delivery); the next cursor is 0-0 at the end."""
        cursor, entries, *_ = await self.redis.xautoclaim(
            self.stream, MATCHING_GROUP, self.consumer, 0, cursor, count=count
        )
        return cursor, entries

    async def claim_without_counting(
        self, cursor: Cursor, count: int
    ) -> tuple[Cursor, list[Entry]]:
        """XAUTOCLAIM's work without counting a delivery (XCLAIM … JUSTID): retries
        during a systemic failure must not push innocent entries to the dead letters."""
        start = cursor if cursor in _DONE else b"(" + _bytes(cursor)
        rows = await self.redis.xpending_range(
            self.stream, MATCHING_GROUP, min=start, max="+", count=count
        )
        ids = [row["message_id"] for row in rows]
        if not ids:
            return "0-0", []
        await self.redis.xclaim(self.stream, MATCHING_GROUP, self.consumer, 0, ids, justid=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xrange(self.stream, entry_id, entry_id)
            found = await pipe.execute()
        entries = [entry for entries in found for entry in entries]
        return (ids[-1] if len(ids) == count else "0-0"), entries

    async def deliveries(self, entries: Sequence[Entry]) -> dict[bytes, int]:
        """Delivery count of each claimed entry (XPENDING)."""
        rows = await self.redis.xpending_range(
            self.stream,
            MATCHING_GROUP,
            min=entries[0][0],
            max=entries[-1][0],
            count=2 * len(entries),
            consumername=self.consumer,
        )
        return {row["message_id"]: row["times_delivered"] for row in rows}

    async def housekeeping(self) -> list[Entry]:
        """Lag gauges, trimming below what the group acknowledged, and claiming entries
        left with a consumer that lost the shard after reading them (returned)."""
        settings = self.settings
        try:
            groups = await self.redis.xinfo_groups(self.stream)
            last_delivered: Any = None
            for group in groups:
                name = _text(group["name"])
                pending = int(group.get("pending") or 0)
                metrics.STREAM_LAG.labels(self.stream, name).set(
                    int(group.get("lag") or 0) + pending
                )
                if name == MATCHING_GROUP:
                    last_delivered = group["last-delivered-id"]
            summary = await self.redis.xpending(self.stream, MATCHING_GROUP)
            floor = summary["min"] if summary["pending"] else last_delivered
            if floor is not None:
                await self.redis.xtrim(self.stream, minid=floor, approximate=False)
            _cursor, entries, *_ = await self.redis.xautoclaim(
                self.stream,
                MATCHING_GROUP,
                self.consumer,
                settings.claim_idle_ms,
                "0-0",
                count=settings.batch_size,
            )
        except REDIS_DOWN as exc:
            log.warning("housekeeping_failed", stream=self.stream, error=str(exc))
            return []
        except ResponseError as exc:
            if is_nogroup(exc):
                raise RecoveryNeeded(self.stream) from exc
            raise
        return list(entries)


def at_end(cursor: Cursor) -> bool:
    return cursor in _DONE


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
