"""`brokerx-worker`: the arq worker plus its /health and /metrics server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from brokerx_core.gc_tuning import freeze_startup_heap, tune_gc
from brokerx_worker.settings import WorkerSettings
from brokerx_worker.worker import run


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed: the worker is I/O-bound on small messages
    (stream entries, SQL, SMTP), and uvloop's transports and callbacks cost a fraction of
    asyncio's. Without it (Windows, or an image built without it) plain asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
    else:
        uvloop.run(main)


def main() -> None:
    tune_gc()  # see brokerx_core.gc_tuning
    freeze_startup_heap()  # what the imports built
    # arq's signal handler cancels the main task on SIGINT/SIGTERM: that is a clean stop.
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        run_loop(run(WorkerSettings()))


if __name__ == "__main__":
    main()
