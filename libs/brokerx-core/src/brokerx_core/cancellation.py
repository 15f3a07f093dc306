"""Background loops that stop when they are told to, even if a library lost the cancel.

A cancel that arrives while a library awaits under its own timeout can come out as an
ordinary exception: on Python 3.11, `asyncio.timeout`/`wait_for` turn a cancel that
races with their deadline into `TimeoutError` (redis-py and aiosmtplib read under
one). A loop that survives errors (`except Exception: log, retry`) then goes on
forever, and whoever awaits the cancelled task (a lifespan's shutdown, the worker's
stop) waits with it. The task still counts the cancel (`Task.cancelling()`), so such a
loop calls `raise_if_cancelled()` after every error it swallows, or at the top of every
turn.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise `CancelledError` if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
