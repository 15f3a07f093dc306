"""`brokerx-worker`: the arq worker plus its /health and /metrics server."""

from __future__ import annotations

import asyncio
import contextlib

from brokerx_worker.settings import WorkerSettings
from brokerx_worker.worker import run


def main() -> None:
    # arq's signal handler cancels the main task on SIGINT/SIGTERM: that is a clean stop.
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(run(WorkerSettings()))


if __name__ == "__main__":
    main()
