"""Every job, cron job and background task the worker runs, gathered from jobs/."""

from __future__ import annotations

from typing import Any

from brokerx_worker import backup
from brokerx_worker.jobs import email, maintenance, market_maker, notifier, orders, outbox

_MODULES = (email, orders, outbox, notifier, market_maker, maintenance, backup)

FUNCTIONS: list[Any] = [f for m in _MODULES for f in m.FUNCTIONS]
CRON_JOBS: list[Any] = [c for m in _MODULES for c in m.CRON_JOBS]
BACKGROUND_TASKS: list[Any] = [t for m in _MODULES for t in m.BACKGROUND_TASKS]
