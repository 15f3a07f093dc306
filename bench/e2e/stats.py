"""Samples of one load phase and the numbers made from them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# Answers a busy market produces by itself: the order filled or moved between the
# moment the client chose to cancel/replace it and the moment the api checked.
RACE_CODES = frozenset(
    {"order_not_cancelable", "order_not_modifiable", "version_conflict", "invalid_quantity"}
)
# Refusals of the risk checks: the client had not enough cash/shares left.
BUSINESS_CODES = frozenset({"insufficient_funds", "insufficient_position", "too_many_open_orders"})


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (None without samples)."""
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    data = np.asarray(values) * 1000.0
    p50, p95, p99 = np.percentile(data, [50, 95, 99])
    return {
        "count": len(values),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(data.max()), 2),
    }


@dataclass
class Recorder:
    """Latencies per request kind and every non-2xx answer, while `measuring`."""

    measuring: bool = False
    latencies: dict[str, list[float]] = field(default_factory=dict)
    accepted_latencies: list[float] = field(default_factory=list)  # POST /orders → 201
    outcomes: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    accepted: int = 0
    requests: int = 0
    # (wall time, kind, status, code, api port) of every answer, for chaos timelines
    timeline: list[tuple[float, str, int, str, int]] | None = None

    def record(
        self, kind: str, status: int, code: str | None, latency: float, wall: float, port: int = 0
    ) -> None:
        if self.timeline is not None:
            self.timeline.append((wall, kind, status, code or "", port))
        if not self.measuring:
            return
        self.requests += 1
        self.latencies.setdefault(kind, []).append(latency)
        if status == 201 and kind in ("limit", "market", "ioc", "fok"):
            self.accepted += 1
            self.accepted_latencies.append(latency)
        if status >= 300 or status == 0:
            self.outcomes[(kind, status, code or "")] += 1

    def errors(self) -> dict[str, int]:
        """Non-2xx answers split into races, business refusals and real errors."""
        split = {"races": 0, "business": 0, "errors": 0}
        for (kind, status, code), count in self.outcomes.items():
            if kind in ("cancel", "replace") and status in (409, 422) and code in RACE_CODES:
                split["races"] += count
            elif status == 422 and code in BUSINESS_CODES:
                split["business"] += count
            else:
                split["errors"] += count
        return split

    def outcome_table(self) -> list[dict[str, object]]:
        return [
            {"kind": kind, "status": status, "code": code, "count": count}
            for (kind, status, code), count in sorted(self.outcomes.items())
        ]
