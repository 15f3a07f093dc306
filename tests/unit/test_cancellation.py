"""A background loop that survives errors still stops when cancelled, even when the
library it awaited turned the cancel into an ordinary error (redis-py does, when the
cancel races with its socket timeout). A CI run hung on exactly that: the api's
heartbeat kept beating after its lifespan cancelled it, and the shutdown waited."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.exceptions

from brokerx_core.cancellation import raise_if_cancelled
from brokerx_core.observability.health import Heartbeat


class _LosesCancels:
    """A Redis whose first SET, when cancelled, raises redis' TimeoutError instead. (Any
    later SET ends the task, so that a loop that goes on fails the test, not hangs it.)"""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.calls = 0

    async def set(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        self.entered.set()
        if self.calls > 1:
            raise asyncio.CancelledError
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise redis.exceptions.TimeoutError("Timeout reading from socket") from None

    async def delete(self, *args: Any) -> int:
        return 0


async def test_a_heartbeat_stops_when_redis_py_lost_its_cancel() -> None:
    lossy = _LosesCancels()
    heartbeat = Heartbeat(lossy, "api", interval=0.01, ttl=5)  # type: ignore[arg-type]
    heartbeat.start()
    await lossy.entered.wait()

    stopping = asyncio.create_task(heartbeat.stop())
    await asyncio.wait({stopping}, timeout=10)  # a liveness bound: it hung forever before

    assert stopping.done()
    assert lossy.calls == 1  # it did not beat again once stopped


async def test_a_cancel_is_honoured_after_it_was_swallowed() -> None:
    async def loop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # a library that lost it
        raise_if_cancelled()
        await asyncio.Event().wait()  # would never end

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait({task}, timeout=10)

    assert task.cancelled()


async def test_a_task_not_asked_to_stop_goes_on() -> None:
    raise_if_cancelled()  # no exception
