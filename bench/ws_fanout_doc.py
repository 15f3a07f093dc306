"""docs/ws-fanout.md from the result of `bench/ws_fanout_bench.py`: method, figures, why.

The benchmark measures and prints its result as JSON; with `--doc` it hands that result
to `render_doc`, which turns it into the page (the prose says how the figures were taken,
so it changes with the benchmark).
"""

from __future__ import annotations

from typing import Any


def render_doc(result: dict[str, Any], *, budget_ms: float) -> str:
    """docs/ws-fanout.md for one run of the benchmark (`result` is its JSON)."""
    r = result
    base, load = r["baseline"], r["loaded"]
    idle, n, verdict = (
        r["idle_connections"],
        r["reports_per_phase"],
        "within" if r["ok"] else "OVER",
    )
    m = r["api_metrics"]
    dropped = {
        reason: int(m.get(f'brokerx_ws_messages_dropped_total{{reason="{reason}"}}', 0))
        for reason in ("conflated", "overflow", "disconnected")
    }
    return f"""# Live stream fan-out

`bench/ws_fanout_bench.py` — can a thousand idle WebSocket connections and one client
that never reads slow down somebody else's execution reports? Requirement: no more than
{budget_ms:.0f} ms of added delay for a normal client's report.

## Method

One api process (uvicorn, one worker, as `brokerx-api` runs it) on real PostgreSQL and
Redis; the benchmark plays the engine (XADD to `executions` and `marketdata`) and every
client, with the `websockets` library, from a second process on the same machine.

1. **Baseline**: one normal client subscribed to its orders. {n}
   execution reports for it are XADDed one at a time (5–20 ms apart); latency is
   XADD → the report read from the client's socket.
2. **Loaded**: plus {idle} authenticated idle connections (subscribed to their own
   orders, which see no activity), plus one slow reader subscribed to every quote, book
   and trade of the eight symbols that never reads (tiny TCP receive window), while
   market data flows at {r["md_updates_per_second"]:.0f} updates/s (ten levels a side and five
   trades each). Timing starts once the api conflates for the slow reader (it is backed
   up); the same {n} reports are timed again.

## Results

{r["date"]}, commit {r["commit"]}, {r["machine"]}; open files {r["fd_limit"]}.

| phase | p50 | p99 | max |
|---|---|---|---|
| baseline (1 client) | {base["p50_ms"]} ms | {base["p99_ms"]} ms | {base["max_ms"]} ms |
| loaded ({idle} idle + 1 slow reader + market data) \
| {load["p50_ms"]} ms | {load["p99_ms"]} ms | {load["max_ms"]} ms |

Added delay: p99 {r["added_delay_p99_ms"]} ms, max {r["added_delay_max_ms"]} ms —
**{verdict} the {budget_ms:.0f} ms budget**. Opening the {idle} connections
(handshake, auth, subscribe; 100 at a time) took {r["connect_seconds"]} s.
Messages the api did not send to the slow reader: {dropped["conflated"]:,} quotes/books
conflated (superseded before being sent), {dropped["overflow"]:,} trades dropped from its
full backlog, {dropped["disconnected"]:,} discarded by a slow-consumer disconnect.

## Why a slow client cannot slow the others

- One reader task per stream (plain XREAD from the tail) dispatches to a hub indexed by
  symbol and by client id; an execution report touches only its owner's connections,
  so idle connections cost nothing per report.
- Dispatch never awaits a socket: each connection has a bounded queue drained by its own
  writer task. Market data is conflated per symbol (the newest quote/book replaces a
  pending one) and trades beyond `ws_queue_size` pending are dropped oldest first;
  execution reports are never dropped — a client whose reports back up past
  `ws_queue_size` is closed with code 4408.
- Each server message is serialized once and the same text is queued to every recipient.

## Caveats

- Clients, Redis, PostgreSQL and the api share the same 2 vCPUs: the loaded figures
  include the benchmark's own work on 1,000 sockets.
- The slow reader is backed up on purpose (a 4 KiB receive window, no compression);
  its 4408 disconnect is exercised by `tests/integration/test_ws_stream.py`, not here.
- A client that never reads keeps its TCP connection (and at most the transport's
  64 KiB write buffer) until it reads or goes away; the api's queues for it are freed
  when it is closed.

Re-run: `uv run python bench/ws_fanout_bench.py --doc docs/ws-fanout.md`.
"""
