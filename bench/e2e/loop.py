"""The generator's event loop: uvloop, and the services' garbage-collector settings.

The generator is a Python process too: with CPython's default thresholds its full
collections (every client's open orders, the latency samples) paused it while answers
waited unread, and those pauses were charged to the system's latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from brokerx_core.gc_tuning import freeze_startup_heap, tune_gc


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    tune_gc()
    freeze_startup_heap()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
