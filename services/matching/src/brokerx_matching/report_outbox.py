"""The report outbox: execution reports survive a crash between commit and XADD.

A batch's reports (the exact `report_json` bytes it XADDs to `executions`, one per line:
compact JSON has no newline) are inserted as ONE `report_outbox` row for the shard by
the batch's own statement (batch_sql.py `_ORDERS`), so they commit with the orders,
trades and ledger entries they describe: no extra statement, no extra round trip, and
one row per batch rather than one per report (a first version with a row per report
cost the engine ~25 % more CPU per order in `make bench`). The statement returns the
row's id.

Cleanup costs nothing either. Once a batch's publish succeeded, its row (shard, id) is
deleted by the shard's NEXT batch statement, in the same CTE list — the rows of a shard
between two ids are exactly the batches published in between, since a shard's batches
run one after the other on the connection holding its lock. When the shard goes idle,
the round trip that checks the lock is still held deletes them instead of `SELECT 1`; a
graceful stop deletes them on the way out. So in normal operation nothing is left
behind and nothing is published twice. Deleting a known id range, rather than "every
row of the shard", keeps the delete an index lookup on the primary key (shard, id):
between two vacuums a scan of the shard's whole key range would walk every dead entry
of every earlier batch.

When a process acquires a shard (start, standby takeover) and whenever the consumer
recovers the shard after a failure, `republish` puts every row still there on
`executions` in id order — reports of a batch committed by a process that died before
publishing them, or whose publish failed — then deletes them, before the shard serves
anything new. Rows this process knows it already published are deleted without being
sent again. After a crash the last published batch may go out twice: report ids are
deterministic and both consumers (api hub, notifier) de-duplicate on them.

Lowering `MATCHING_SHARDS` to N leaves rows of shards >= N that no owner will ever
republish. The owner of shard 0 takes them over (`republish_orphans`): when it takes
shard 0, right after that shard's own rows, it puts every row of a shard >= N on
`executions` in id order and deletes exactly those rows, before serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from brokerx_matching.publish import BatchPublisher

Connection = Any  # asyncpg.Connection
IdRange = tuple[int, int]

_SHARD_ROWS = "SELECT id, reports FROM report_outbox WHERE shard = $1::smallint ORDER BY id"
_DELETE_RANGE = (
    "DELETE FROM report_outbox WHERE shard = $1::smallint AND id BETWEEN $2::bigint AND $3::bigint"
)
# Rows of shards that no longer exist (>= MATCHING_SHARDS), all of them in id order.
_ORPHAN_ROWS = "SELECT id, reports FROM report_outbox WHERE shard >= $1::smallint ORDER BY id"
_DELETE_ORPHANS = "DELETE FROM report_outbox WHERE shard >= $1::smallint AND id = ANY($2::bigint[])"
# Republished reports go out this many per publish script (bounded arguments).
REPUBLISH_CHUNK = 1000
# The shard whose owner republishes the rows of the shards that no longer exist.
ORPHANS_OWNER = 0


async def _publish_chunked(publisher: BatchPublisher, payloads: Sequence[bytes]) -> None:
    for start in range(0, len(payloads), REPUBLISH_CHUNK):
        await publisher.publish(payloads[start : start + REPUBLISH_CHUNK], (), ())


async def republish_orphans(conn: Connection, publisher: BatchPublisher, shards: int) -> int:
    """Put the rows of shards >= `shards` (left when MATCHING_SHARDS was lowered) on
    `executions` in id order, then delete those rows; returns how many reports went out.

    Run by the owner of shard `ORPHANS_OWNER` when it takes it, on that shard's
    connection; a failure leaves the rows for its next recovery.
    """
    rows = await conn.fetch(_ORPHAN_ROWS, shards)
    if not rows:
        return 0
    payloads = [line.encode() for _id, lines in rows for line in lines.split("\n")]
    await _publish_chunked(publisher, payloads)
    await conn.execute(_DELETE_ORPHANS, shards, [id_ for id_, _lines in rows])
    return len(payloads)


class ReportOutbox:
    """The report outbox rows of one shard that this process knows about."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        # Rows of the last committed batch whose reports are not out yet.
        self._unpublished: IdRange | None = None
        # Rows of the last batch whose reports are out, to delete with the next write.
        self._published: IdRange | None = None

    def params(self, reports: Sequence[bytes]) -> list[Any]:
        """$19-$22 of the batch statements: shard, the reports one per line (None when
        there are none), published id range."""
        low, high = self._published or (None, None)
        lines = b"\n".join(reports).decode() if reports else None
        return [self.shard, lines, low, high]

    def committed(self, inserted: IdRange | None) -> None:
        """The batch statement committed: it deleted the published rows and inserted
        the row `inserted` (as (id, id); None: no report)."""
        self._published = None
        self._unpublished = inserted

    def published(self) -> None:
        """The last committed batch's reports are on `executions`."""
        if self._unpublished is not None:
            self._published = self._unpublished
            self._unpublished = None

    async def probe(self, conn: Connection) -> None:
        """One round trip on the shard's connection (the idle check that it still holds
        the lock), which deletes the published rows when there are some."""
        if self._published is None:
            await conn.fetchval("SELECT 1")
            return
        low, high = self._published
        await conn.execute(_DELETE_RANGE, self.shard, low, high)
        self._published = None

    async def republish(self, conn: Connection, publisher: BatchPublisher) -> int:
        """Put the shard's rows still in the outbox on `executions` (id order), then
        delete them; returns how many reports went out."""
        rows = await conn.fetch(_SHARD_ROWS, self.shard)
        known = self._published
        payloads = [
            line.encode()
            for id_, lines in rows
            if known is None or not known[0] <= id_ <= known[1]
            for line in lines.split("\n")
        ]
        await _publish_chunked(publisher, payloads)
        if rows:
            await conn.execute(_DELETE_RANGE, self.shard, rows[0][0], rows[-1][0])
        self._published = self._unpublished = None
        return len(payloads)
