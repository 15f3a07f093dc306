"""Garbage-collector settings for the long-running services (api, matching, worker).

CPython's defaults (700, 10, 10) suit short scripts. A service handling a request or a
batch allocates hundreds of objects that all live until it is answered, so young
collections run many times a second, and the full ones walk the whole heap: imports,
FastAPI's routes and pydantic's schemas, ~136,000 objects in an api worker, which a
full collection scans in ~40 ms on the 2-vCPU VM — a pause for every request in flight
on that process. Measured (`make bench`, closed loop):

* matching: collections were a fifth of its CPU (1.1 s of a 40,000-order run), 0.1 s
  with these settings;
* api: CPU per request 0.63 -> 0.45 ms, and at 1,000 requests/s order-ACK p99
  295 -> 105 ms.

So: higher thresholds, and the heap built at start-up frozen (`gc.freeze`) out of every
later scan once the service serves. Garbage in cycles is still collected, only less
often; frozen objects are never freed, which is right for what start-up builds (it
lives as long as the process).
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 20)

_frozen = False


def tune_gc() -> None:
    """Raise the collection thresholds (call early: at process start)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup_heap() -> None:
    """Move what exists now out of the collector's scans; once per process (a test
    process that builds many apps freezes only the first one's start-up)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
