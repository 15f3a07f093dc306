"""`make bench --pg-waits`: PostgreSQL's busy backends by connection kind and by what they
wait on, and who holds the locks they wait for."""

from __future__ import annotations

from types import SimpleNamespace

from bench.e2e.pg_waits import summarize


def _row(
    pid: int, app: str, wait: str | None = None, blocker: str | None = None, state: str = ""
) -> SimpleNamespace:
    return SimpleNamespace(
        pid=pid,
        app=app,
        wait=wait,
        blocker=blocker,
        blocker_state=state or None,
        blocker_query="WITH trades AS (\n  INSERT" if blocker else None,
    )


def test_means_per_sample_and_the_lock_share_of_each_kind_of_connection() -> None:
    samples = [
        [_row(1, "api-intake"), _row(2, "api-intake", "Lock", "matching-shard", "active")],
        [_row(1, "api-intake", "Lock", "matching-shard", "idle in transaction")],
        [_row(3, "matching-shard"), _row(1, "api-intake")],
        [],
    ]

    result = summarize(samples)

    assert result["samples"] == 4
    assert result["backends"]["api-intake"] == {"lock": 0.5, "running": 0.5, "lock_share": 0.5}
    assert result["backends"]["matching-shard"] == {"running": 0.25, "lock_share": 0.0}
    assert [
        (item["waiter"], item["blocker"], item["blocker_state"], item["mean"])
        for item in result["blocked_by"]
    ] == [
        ("api-intake", "matching-shard", "active", 0.25),
        ("api-intake", "matching-shard", "idle in transaction", 0.25),
    ]
    assert result["blocked_by"][0]["blocker_query"] == "WITH trades AS ( INSERT"


def test_a_backend_blocked_by_two_is_one_backend_waiting_and_two_blockers() -> None:
    samples = [
        [
            _row(7, "api-intake", "Lock", "matching-shard", "active"),
            _row(7, "api-intake", "Lock", "api-intake", "active"),
        ]
    ]

    result = summarize(samples)

    assert result["backends"]["api-intake"] == {"lock": 1.0, "lock_share": 1.0}
    assert {item["blocker"] for item in result["blocked_by"]} == {"matching-shard", "api-intake"}


def test_no_samples_no_backends() -> None:
    assert summarize([])["backends"] == {}
    assert summarize([])["blocked_by"] == []
