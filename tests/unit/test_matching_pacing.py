"""When a shard reads its next batch (brokerx_matching.pacing)."""

from __future__ import annotations

import pytest

from brokerx_matching.pacing import Pacer


def drive(pacer: Pacer, per_second: int, seconds: float, batch: int) -> list[float]:
    """Reads of `batch` entries at `per_second` entries/s; the waits the pacer asks for."""
    waits = []
    now = 0.0
    step = batch / per_second
    while now < seconds:
        waits.append(pacer.next_read(now, batch) - now)
        now += step
    return waits


def test_a_quiet_shard_never_waits() -> None:
    pacer = Pacer(0.03, 500)
    # 40 orders/s: 1.2 per 30 ms, waiting would not make batches of two.
    assert set(drive(pacer, 40, 5.0, 1)) == {0.0}
    assert not pacer.pacing


def test_a_busy_shard_waits_an_interval_between_batches() -> None:
    pacer = Pacer(0.03, 500)
    waits = drive(pacer, 250, 3.0, 2)
    assert waits[0] == 0.0  # no rate known yet
    assert pacer.pacing
    assert waits[-1] == pytest.approx(0.03)


def test_a_full_batch_is_followed_at_once_and_idle_reads_never_wait() -> None:
    pacer = Pacer(0.03, 100)
    drive(pacer, 1000, 2.0, 10)
    assert pacer.pacing
    assert pacer.next_read(2.5, 100) == 2.5  # a backlog
    assert pacer.next_read(2.6, 0) == 2.6  # nothing came: the next read blocks anyway


def test_pacing_stops_when_the_load_goes() -> None:
    pacer = Pacer(0.03, 500)
    drive(pacer, 500, 2.0, 5)
    assert pacer.pacing
    pacer.next_read(3.0, 1)
    pacer.next_read(4.5, 1)  # two entries in 1.5 s
    assert not pacer.pacing


def test_zero_interval_turns_it_off() -> None:
    pacer = Pacer(0.0, 500)
    assert set(drive(pacer, 5000, 2.0, 20)) == {0.0}
