"""An api process serves with the tuned garbage collector (brokerx_core.gc_tuning).

A fresh interpreter, as uvicorn's worker processes are: the app's lifespan raises the
collection thresholds and freezes the start-up heap out of later scans. Without it, a
full collection scanned ~136,000 objects (~40 ms) while requests waited.
"""

from __future__ import annotations

import json
import subprocess
import sys

from brokerx_core.gc_tuning import THRESHOLDS
from tests.conftest import settings_overrides
from tests.support.servers import ServerUrls

_PROBE = """
import asyncio, gc, json, sys
from brokerx_api.app import create_app
from brokerx_api.settings import ApiSettings

async def main():
    app = create_app(ApiSettings(**json.loads(sys.argv[1])))
    before = (gc.get_threshold(), gc.get_freeze_count())
    async with app.router.lifespan_context(app):
        during = (gc.get_threshold(), gc.get_freeze_count())
    print(json.dumps({"before": before, "during": during}))

asyncio.run(main())
"""


def test_the_api_serves_with_raised_thresholds_and_a_frozen_startup_heap(
    servers: ServerUrls, database_url: str
) -> None:
    settings = settings_overrides(servers, database_url)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    (thresholds, frozen), (tuned, frozen_serving) = probe["before"], probe["during"]
    assert tuple(thresholds) == (700, 10, 10)  # CPython's defaults before start-up
    assert frozen == 0
    assert tuple(tuned) == THRESHOLDS
    assert frozen_serving > 50_000  # imports, routes and schemas: out of every scan
