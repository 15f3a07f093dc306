"""`brokerx-api`: serve the api with uvicorn (API_WORKERS processes)."""

from __future__ import annotations

import uvicorn

from brokerx_api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    uvicorn.run(
        "brokerx_api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )


if __name__ == "__main__":
    main()
