"""Seeding refuses instruments whose prices could make a fill pay more than it reserved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokerx_core.seed import INSTRUMENTS, InstrumentSeed


@pytest.mark.parametrize("tick", ["0.01", "0.05", "0.10", "1", "0.2500"])
def test_tick_sizes_in_whole_cents_are_accepted(tick: str) -> None:
    seed = InstrumentSeed("ABC", "ABC Corp.", Decimal("10.00"), Decimal(tick))
    assert seed.tick_size == Decimal(tick)


@pytest.mark.parametrize("tick", ["0.005", "0.0001", "0.015", "0", "-0.01", "NaN", "Infinity"])
def test_tick_sizes_below_or_between_cents_are_refused(tick: str) -> None:
    with pytest.raises(ValueError, match="not a positive multiple of 0.01"):
        InstrumentSeed("ABC", "ABC Corp.", Decimal("10.00"), Decimal(tick))


def test_the_default_and_the_seeded_instruments_use_whole_cents() -> None:
    assert InstrumentSeed("ABC", "ABC Corp.", Decimal("10.00")).tick_size == Decimal("0.01")
    assert all(item.tick_size % Decimal("0.01") == 0 for item in INSTRUMENTS)
