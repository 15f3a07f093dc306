"""The api's clock: `app.state.clock` (epoch seconds) when set, else `time.time`.

Lockouts, code expiry, token expiry and rate-limit windows all read this one clock, so
tests move time forward by replacing it instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

Clock = Callable[[], float]


def app_clock(app: Any) -> Clock:
    """The clock installed on the app, or the wall clock."""
    clock: Clock = getattr(app.state, "clock", time.time)
    return clock


def utc(epoch_seconds: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC)


async def get_clock(request: Request) -> Clock:
    """The request's app clock (read per call, so a replaced clock applies at once)."""
    app = request.app
    return lambda: app_clock(app)()


ClockDep = Annotated[Clock, Depends(get_clock)]
