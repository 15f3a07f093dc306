"""Worker jobs: outbox."""

from __future__ import annotations

from typing import Any

FUNCTIONS: list[Any] = []
CRON_JOBS: list[Any] = []
BACKGROUND_TASKS: list[Any] = []
