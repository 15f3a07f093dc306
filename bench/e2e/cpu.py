"""CPU use of each part of the system while a phase runs (psutil, sampled every second).

A group is a set of root PIDs; each sample walks their process trees (PostgreSQL
backends come and go with the pools), so CPU of processes that started mid-phase
counts from their start, and a process that exits loses at most its last second.
100 % means one full core.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psutil

Roots = Callable[[], list[int]]


class CpuSampler:
    def __init__(
        self, groups: dict[str, Roots], interval: float = 1.0, alone: frozenset[str] = frozenset()
    ) -> None:
        self.groups = groups
        self.alone = alone  # groups measured without their children (the generator)
        self.interval = interval
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (create_time, cpu seconds)
        self._busy: dict[str, float] = dict.fromkeys(groups, 0.0)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = 0.0
        self._ended = 0.0
        self._machine: float | None = None

    def _processes(self, roots: list[int], alone: bool) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in roots:
            try:
                proc = psutil.Process(pid)
                found[pid] = proc
                for child in [] if alone else proc.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                continue
        return list(found.values())

    def _sample(self, count: bool) -> None:
        for name, roots in self.groups.items():
            for proc in self._processes(roots(), name in self.alone):
                try:
                    created = proc.create_time()
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                used = times.user + times.system
                last = self._last.get(proc.pid)
                if last is not None and last[0] == created:
                    delta = used - last[1]
                else:  # first sight: count only what it used after the phase began
                    delta = used if created >= self._started and count else 0.0
                self._last[proc.pid] = (created, used)
                if count:
                    self._busy[name] += max(0.0, delta)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(True)

    def start(self) -> None:
        self._started = time.time()
        psutil.cpu_percent(None)  # prime the machine-wide counter
        self._sample(False)
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU % per group over the sampled span (+ `machine`: all cores, 100 % = every core)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample(True)
        self._ended = time.time()
        self._machine = psutil.cpu_percent(None)
        span = max(1e-6, self._ended - self._started)
        result = {name: round(100.0 * busy / span, 1) for name, busy in self._busy.items()}
        cores = float(os.cpu_count() or 1)
        result["machine"] = round(self._machine, 1)
        result["cores"] = cores
        # What else ran meanwhile (other people's jobs on a shared VM), in one-core units.
        result["other processes"] = round(
            max(0.0, self._machine * cores - sum(self._busy.values()) * 100.0 / span), 1
        )
        result["load_average_1m"] = round(os.getloadavg()[0], 2)
        return result
