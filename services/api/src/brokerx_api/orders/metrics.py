"""Business metrics of order intake (module-level: registered once per process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

ORDERS_RECEIVED = Counter(
    "brokerx_orders_received_total",
    "Well-formed order requests received by intake",
    ["side", "type"],
)
ORDERS_REJECTED = Counter(
    "brokerx_orders_rejected_total",
    "Order requests refused by intake, by error code",
    ["reason"],
)
ORDER_ACK_SECONDS = Histogram(
    "brokerx_order_ack_seconds",
    "Time from receiving POST /orders to its 201 (commit and publish included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

_RECEIVED: dict[tuple[str, str], Any] = {}


def received(side: str, order_type: str) -> Any:
    """The `ORDERS_RECEIVED` child of (side, type), looked up once (`labels()` takes a
    lock and a dict lookup on every order)."""
    child = _RECEIVED.get((side, order_type))
    if child is None:
        child = _RECEIVED[(side, order_type)] = ORDERS_RECEIVED.labels(side=side, type=order_type)
    return child
