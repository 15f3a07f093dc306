"""Several api worker processes (API_WORKERS > 1): the uvicorn master and its workers.

The master binds the port, starts the workers (each imports `create_app` and runs its
own lifespan: engine, Redis, arq pool, stream readers) and restarts any that dies.
Before the first worker starts it prepares the Prometheus multiprocess directory
(`PROMETHEUS_MULTIPROC_DIR`, or a private temporary one when unset), and while they run
it drops the `live*` gauges of workers that are gone, so `/metrics` only sums live ones.

A worker exits on its own once its master is gone (`exit_with_master`): a SIGKILLed
master must not leave workers holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from socket import socket

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from brokerx_core.observability.multiprocess import (
    MULTIPROC_ENV,
    multiprocess_dir,
    prepare_dir,
    sweep_dead,
)

MASTER_CHECK_SECONDS = 1.0


class MetricsMultiprocess(Multiprocess):
    """uvicorn's worker supervisor that also forgets the gauges of dead workers."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket], metrics: Path) -> None:
        super().__init__(config, sockets)
        self.metrics = metrics
        self.startup_failed = False

    def keep_subprocess_alive(self) -> None:
        exiting = self.should_exit.is_set()
        super().keep_subprocess_alive()
        if not exiting and self.should_exit.is_set():
            self.startup_failed = True  # a worker failed to start: uvicorn gives up
        self.sweep()

    def sweep(self) -> list[int]:
        """Drop the `live*` gauge files of every PID that is not a running worker."""
        live = {proc.pid for proc in self.processes if proc.pid and proc.process.is_alive()}
        dead: list[int] = sweep_dead(self.metrics, live)
        return dead


@contextlib.contextmanager
def metrics_dir() -> Iterator[Path]:
    """The multiprocess directory, created and emptied; a private one when unset.

    Runs in the master before any worker exists (prometheus_client requires the
    directory to be wiped between runs). The workers inherit the variable.
    """
    configured = multiprocess_dir()
    if configured is not None:
        prepare_dir(configured)
        yield configured
        return
    private = Path(tempfile.mkdtemp(prefix="brokerx-api-metrics-"))
    os.environ[MULTIPROC_ENV] = str(private)
    try:
        yield private
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(private, ignore_errors=True)


def run_workers(config: uvicorn.Config) -> None:
    """`uvicorn.run` for `config.workers` > 1, with the metrics bookkeeping above."""
    with metrics_dir() as metrics:
        sock = config.bind_socket()
        supervisor = MetricsMultiprocess(config, [sock], metrics)
        try:
            supervisor.run()
        except KeyboardInterrupt:  # pragma: no cover - uvicorn queues signals itself
            pass
        finally:
            sock.close()
    if supervisor.startup_failed:
        sys.exit(STARTUP_FAILURE)


async def exit_with_master(interval: float = MASTER_CHECK_SECONDS) -> None:
    """In a worker started by a master process: SIGTERM ourselves once it is gone.

    Returns at once in a process nobody spawned through multiprocessing (a single
    uvicorn process, the tests' in-process app).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    while os.getppid() == parent.pid:  # noqa: ASYNC110 - nothing to wait on but time
        await asyncio.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's handler: a graceful shutdown
