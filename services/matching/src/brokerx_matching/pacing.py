"""When a shard reads its next batch.

A batch costs about as much as ten orders whatever its size (its reads and writes,
publication, the wake-ups between them), so reading again as soon as a batch is done
makes the service spend most of its CPU on batches of one or two orders once orders
arrive faster than batches complete — about as much CPU at 500 orders/s as at 2,000.
Under load a shard therefore starts a batch at most every `interval` (entries arriving
meanwhile join the next one); a full batch (a backlog) is followed at once. Below the
rate at which waiting would at least double a batch (two entries per interval), it does
not wait: a lone order is taken at once, and waiting would only add latency.
"""

from __future__ import annotations

WINDOW_SECONDS = 1.0  # the arrival rate is measured over this long


class Pacer:
    def __init__(self, interval: float, batch_size: int) -> None:
        self.interval = interval
        self.batch_size = batch_size
        self.pacing = False
        self._window_start: float | None = None
        self._window_entries = 0

    def next_read(self, now: float, entries: int) -> float:
        """After reading `entries` at `now` (monotonic seconds): the time of the next
        read (≤ now: at once)."""
        if self._window_start is None:
            self._window_start = now
        self._window_entries += entries
        elapsed = now - self._window_start
        if elapsed >= WINDOW_SECONDS:
            rate = self._window_entries / elapsed
            self.pacing = rate * self.interval >= 2
            self._window_start, self._window_entries = now, 0
        if not entries or entries >= self.batch_size or not self.pacing:
            return now
        return now + self.interval
