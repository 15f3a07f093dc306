"""What the devstack started in a data directory, recorded in `<data_dir>/devstack.json`.

`stop` and the next `run` read it to find leftovers of a run that was killed. Writers
replace the file atomically; `locked()` serialises starting servers in one data dir
across processes (two test sessions starting at once share one set of servers).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATE_FILE = "devstack.json"
LOCK_FILE = ".lock"


def load_state(data_dir: Path) -> dict[str, Any]:
    """The recorded state ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_state(data_dir: Path, **sections: Any) -> dict[str, Any]:
    """Set (or, with None, remove) top-level sections and write the file atomically."""
    state = load_state(data_dir)
    for key, value in sections.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(data_dir / STATE_FILE)
    return state


@contextlib.contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir (not re-entrant: never nest it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
