"""Where the time goes: py-spy samples of the services during a phase (optional).

`py-spy record --format raw` writes collapsed stacks ("frame;frame;frame count"). Each
sample is charged to the *stages* whose marker appears anywhere in its stack (inclusive
time, so a sample in asyncpg under the intake transaction counts for both), and to its
leaf function (self time). py-spy is not a project dependency: `uv tool install py-spy`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

# (stage, substrings of a frame "function (file:line)"): inclusive, so stages overlap
STAGES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "api": [
        ("request in the ASGI app (everything below)", ("RequestResponseCycle.run_asgi",)),
        ("FastAPI dependency solving (auth, session, params)", ("solve_dependencies",)),
        ("auth check (CurrentClient)", ("brokerx_api/auth/deps.py",)),
        ("  JWT decode", ("jwt/api_jwt.py",)),
        ("POST /orders endpoint", ("create_order (brokerx_api/orders/endpoints.py",)),
        ("  intake transaction (place_order)", ("place_order (brokerx_core/intake/placement",)),
        ("    client_order_id replay lookup", ("_find_by_client_order_id",)),
        ("cancel / replace intake", ("brokerx_core/intake/amend.py",)),
        ("BEGIN (asyncpg Transaction.start)", ("Transaction.start",)),
        ("pool pre-ping (SELECT 1 per checkout)", ("_async_ping", "do_ping")),
        ("COMMIT", ("AsyncSession.commit", "Transaction.__commit")),
        ("all SQL (SQLAlchemy + asyncpg)", ("sqlalchemy/", "asyncpg/")),
        ("XADD (publish_commands)", ("publish_commands",)),
        ("all Redis", ("redis/asyncio",)),
        (
            "response rendering (serialize, JSON)",
            ("serialize_response", "jsonable_encoder", "dump_json", ".render ("),
        ),
        ("sending the response", ("RequestResponseCycle.send",)),
        ("live stream fan-out", ("brokerx_api/stream/",)),
        ("logging (structlog)", ("structlog/",)),
        ("metrics (prometheus)", ("prometheus_client/",)),
    ],
    "matching": [
        ("consume loop", ("ShardConsumer._process",)),
        ("  de-duplicate (outbox ids)", ("_deduplicate",)),
        ("  load orders", ("BatchRunner._load",)),
        ("  engine apply (book + matching)", ("MatchingEngine.apply",)),
        (
            "    order book (pure)",
            ("brokerx_matching/book.py", "brokerx_matching/book_levels.py"),
        ),
        ("  persist batch (commit_batch)", ("commit_batch",)),
        ("  publish reports + market data", ("BatchRunner.publish",)),
        ("all SQL (asyncpg)", ("asyncpg/",)),
        ("socket writes (transport.write)", ("_SelectorSocketTransport.write",)),
        ("all Redis", ("redis/asyncio",)),
        ("pydantic / JSON", ("pydantic/", "json/encoder")),
        ("logging (structlog)", ("structlog/",)),
        ("idle (epoll wait)", ("EpollSelector.select",)),
    ],
    "worker": [
        ("outbox relay", ("brokerx_worker/jobs/outbox.py",)),
        ("notifier", ("brokerx_worker/jobs/notifier.py",)),
        ("market maker", ("brokerx_worker/jobs/market_maker.py",)),
        ("arq", ("arq/",)),
        ("all SQL (asyncpg)", ("asyncpg/",)),
        ("all Redis", ("redis/asyncio",)),
        ("idle (epoll wait)", ("EpollSelector.select",)),
    ],
}


def py_spy() -> str | None:
    """py-spy from PATH, or where `uv tool install py-spy` puts it."""
    found = shutil.which("py-spy")
    if found:
        return found
    tool = Path.home() / ".local" / "bin" / "py-spy"
    return str(tool) if tool.exists() else None


def available() -> bool:
    return py_spy() is not None


class Profiler:
    """py-spy on some PIDs for `seconds`; `summary()` after `wait()`."""

    def __init__(self, out_dir: Path, targets: dict[str, int], seconds: float) -> None:
        self.out_dir = out_dir
        self.targets = targets
        self.seconds = seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.targets.items():
            self.processes[name] = subprocess.Popen(
                [
                    py_spy() or "py-spy",
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(self.seconds)),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--subprocesses",  # the api's workers under its master (API_WORKERS)
                    "--output",
                    str(self.raw(name)),
                ],  # fmt: skip
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def raw(self, name: str) -> Path:
        return self.out_dir / f"profile-{name}.txt"

    def wait(self) -> None:
        for process in self.processes.values():
            try:
                process.wait(self.seconds + 60)
            except subprocess.TimeoutExpired:
                process.kill()

    def summary(self) -> dict[str, dict[str, object]]:
        return {name: summarise(self.raw(name), name) for name in self.targets}


def summarise(path: Path, service: str) -> dict[str, object]:
    """Inclusive share of samples per stage and the top self-time leaves."""
    if not path.exists():
        return {"error": f"no profile at {path}"}
    total = 0
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for stage, markers in STAGES.get(service, []):
            if any(marker in stack for marker in markers):
                stages[stage] += count
        leaves[stack.rsplit(";", 1)[-1]] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "stages_percent": {k: round(100 * v / total, 1) for k, v in stages.most_common()},
        "top_leaves_percent": {k: round(100 * v / total, 1) for k, v in leaves.most_common(15)},
    }
