"""Reading Prometheus text and multiprocess files in tests."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of every sample called `name` whose labels include `labels`."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                found.append(sample.value)
    return found


def total(text: str, name: str, **labels: str) -> float:
    """The sum of `samples(...)` (0 when there is none)."""
    return sum(samples(text, name, **labels))


def counter_of_pid(directory: Path, pid: int, name: str, **labels: str) -> float:
    """One process's share of a counter, read from its own multiprocess file."""
    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    value = 0.0
    for metric in MultiProcessCollector.merge([str(path)]):
        for sample in metric.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                value += sample.value
    return value
