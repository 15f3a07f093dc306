"""Housekeeping of the `executions` stream: its readers' lag, and trimming it.

Every shard publishes to the one `executions` stream without trimming it (publish.py):
a MAXLEN on each XADD would drop reports the worker's `notifier` group has not
acknowledged yet (an outage of the worker longer than the cap would lose confirmation
e-mails). Instead the shard manager calls `executions_housekeeping` periodically, and
it trims the stream the way DESIGN.md says streams are trimmed: only below the oldest
entry some group has not acknowledged (docs/trading.md, "Per batch"):

* a group's floor is its oldest pending entry, else its last delivered entry (what
  comes after it is not read yet); the stream is trimmed exactly below the lowest floor
  of all its groups, however long that leaves it;
* with no group at all (a fresh deployment before the worker's first start, or a Redis
  flush before the notifier recreated its group) nothing is owed to anyone, and the
  stream is capped at about `maxlen` entries so that it cannot grow without bound; the
  notifier, whose group starts at id 0, still finds the last `maxlen` reports.

Entries read by id outside any group (the api's live fan-out) are not tracked, but the
last `retention_seconds` of reports are never trimmed (stream ids are the Redis
server's clock), so a fan-out reader that stalls briefly behind the notifier still finds
what it has not read.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from brokerx_core.observability.logging import get_logger
from brokerx_core.streams import EXECUTIONS_STREAM
from brokerx_matching import metrics

log = get_logger(__name__)

_START = (0, 0)


async def executions_housekeeping(
    redis: Any, *, maxlen: int, trim: bool, retention_seconds: float = 0.0
) -> None:
    """Refresh the lag gauges of the groups on `executions`; trim it when `trim`,
    keeping at least the entries of the last `retention_seconds`."""
    try:
        groups = await redis.xinfo_groups(EXECUTIONS_STREAM)
        floor: tuple[int, int] | None = None
        for group in groups:
            name = _text(group["name"])
            pending = int(group.get("pending") or 0)
            metrics.STREAM_LAG.labels(EXECUTIONS_STREAM, name).set(
                int(group.get("lag") or 0) + pending
            )
            if not trim:
                continue
            first = group["last-delivered-id"]
            if pending:
                first = (await redis.xpending(EXECUTIONS_STREAM, name))["min"] or first
            group_floor = _entry_id(first)
            floor = group_floor if floor is None else min(floor, group_floor)
        if not trim:
            return
        if floor is None:
            await redis.xtrim(EXECUTIONS_STREAM, maxlen=maxlen, approximate=True)
        else:
            floor = min(floor, await _retention_floor(redis, retention_seconds))
            if floor <= _START:
                return
            await redis.xtrim(EXECUTIONS_STREAM, minid=f"{floor[0]}-{floor[1]}", approximate=False)
    except ResponseError as exc:
        if "no such key" not in str(exc).lower():  # no stream yet: nothing to do
            log.warning("executions_housekeeping_failed", error=str(exc))
    except Exception as exc:  # never stop the shard manager's loop: retried next round
        log.warning("executions_housekeeping_failed", error=repr(exc))


async def _retention_floor(redis: Any, retention_seconds: float) -> tuple[int, int]:
    """The first entry id of the retention window, by the Redis server's clock."""
    seconds, microseconds = await redis.time()
    now_ms = int(seconds) * 1000 + int(microseconds) // 1000
    return max(now_ms - int(retention_seconds * 1000), 0), 0


def _entry_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable pair (ids compare numerically, not as text)."""
    milliseconds, _, sequence = _text(value).partition("-")
    return int(milliseconds), int(sequence or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
