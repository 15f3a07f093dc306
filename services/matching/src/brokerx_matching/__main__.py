"""`brokerx-matching`: run the matching service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from brokerx_matching.service import run
from brokerx_matching.settings import MatchingSettings

# Garbage collection. With the default thresholds (700, 10, 10) a batch of a few hundred
# orders, whose objects all live until it is published, sets off a dozen collections,
# and the full ones walk the whole heap (imports, the ops side, the books): in a run of
# 40,000 orders (bench/matching_bench.py) 1,159 young, 106 middle and 9 full collections
# took 1.1 s, a fifth of the service's CPU, to free ~250 objects in cycles (the books
# make none, see book.py). Higher thresholds, and the start-up heap frozen out of the
# scans once the service serves: 0.1 s.
GC_THRESHOLDS = (20_000, 20, 20)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it exists (not on Windows): the service lives on small
    messages and many round trips, and uvloop's transports and callbacks cost a fraction
    of asyncio's (with it alone, ~1.7 instead of ~2.4 ms of CPU per batch of one)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    gc.set_threshold(*GC_THRESHOLDS)
    run_loop(run(MatchingSettings(), on_started=gc.freeze))


if __name__ == "__main__":
    main()
