"""Auth tests run the api on a fake clock, so lockouts and expiries are tested by moving
time rather than by sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.auth import FakeClock, running_api
from tests.support.servers import ServerUrls


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app_api(
    servers: ServerUrls, database_url: str, engine: AsyncEngine, redis: Redis, clock: FakeClock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The api with its lifespan, on `clock`, and an HTTP client to it."""
    async with running_api(servers, database_url, clock) as pair:
        yield pair


@pytest.fixture
def api(app_api: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_api[1]
