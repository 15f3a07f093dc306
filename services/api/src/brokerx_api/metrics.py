"""`GET /metrics`: Prometheus text of this process, or of every api worker.

With API_WORKERS > 1 the brokerx_api master sets `PROMETHEUS_MULTIPROC_DIR`; the worker
that happens to answer the scrape then aggregates the files of all workers (see
`brokerx_core.observability.multiprocess`). prometheus-fastapi-instrumentator only
instruments requests; this endpoint replaces its `expose()` so that the answering
worker can publish its own memory and pool numbers first.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from brokerx_core.observability.metrics import ProcessMetrics
from brokerx_core.observability.multiprocess import scrape_registry

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus exposition (sync: rendering runs in the thread pool, off the loop)."""
    process_metrics: ProcessMetrics | None = getattr(request.app.state, "process_metrics", None)
    if process_metrics is not None:
        process_metrics.refresh()
    return Response(generate_latest(scrape_registry()), media_type=CONTENT_TYPE_LATEST)
