"""`brokerx-api`: serve the api with uvicorn (API_WORKERS processes).

One worker: a single uvicorn process, as always. Several: a master process that binds
the port and supervises the workers, with Prometheus multiprocess mode so that
`/metrics` covers all of them (`brokerx_api.workers`).
"""

from __future__ import annotations

from typing import Any

import uvicorn

from brokerx_api.coalescing import CoalescingHttpToolsProtocol
from brokerx_api.settings import ApiSettings
from brokerx_api.workers import metrics_dir, run_workers
from brokerx_core.observability.logging import configure_logging
from brokerx_core.observability.multiprocess import multiprocess_dir

APP = "brokerx_api.app:create_app"


def server_options(settings: ApiSettings) -> dict[str, Any]:
    """uvicorn's settings for the api (`uvicorn.run` / `uvicorn.Config` keywords)."""
    return {
        "factory": True,
        "host": settings.api_host,
        "port": settings.api_port,
        "workers": settings.api_workers,
        # One send per connection per loop iteration (answers, live-stream messages).
        "http": CoalescingHttpToolsProtocol,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "ws_ping_interval": 20,
        "ws_ping_timeout": 20,
    }


def main() -> None:
    settings = ApiSettings()
    options = server_options(settings)
    if settings.api_workers > 1:
        configure_logging("api", settings.log_level, json=settings.log_json)  # the master's
        run_workers(uvicorn.Config(APP, **options))
    elif multiprocess_dir() is not None:
        # One process, but the operator asked for multiprocess mode: start from a clean dir.
        with metrics_dir():
            uvicorn.run(APP, **options)
    else:
        uvicorn.run(APP, **options)


if __name__ == "__main__":
    main()
