"""`/health` of the api: database, redis and the engine's and worker's heartbeats."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from brokerx_core.observability.health import (
    check_database,
    check_heartbeat,
    check_redis,
    run_checks,
)

router = APIRouter()


@router.get("/health", include_in_schema=True, tags=["operations"])
async def health(request: Request) -> JSONResponse:
    """Health of the api and of what it depends on: 200 when all checks pass, else 503."""
    state = request.app.state
    status, body = await run_checks(
        {
            "database": lambda: check_database(state.engine),
            "redis": lambda: check_redis(state.redis),
            "matching": lambda: check_heartbeat(state.redis, "matching"),
            "worker": lambda: check_heartbeat(state.redis, "worker"),
        }
    )
    return JSONResponse(body, status_code=status)
