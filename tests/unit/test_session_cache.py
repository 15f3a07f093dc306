"""The in-process session memo: answers for `ttl` seconds, then asks again."""

from __future__ import annotations

import uuid

from brokerx_api.auth.session_cache import LocalSessionCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_answered_until_its_ttl_then_forgotten() -> None:
    clock = FakeClock()
    cache = LocalSessionCache(2.0, clock=clock)
    live, dead, account = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(live, account)
    cache.put(dead, None)

    clock.now += 1.9
    assert cache.get(live) == (True, account)
    assert cache.get(dead) == (True, None)  # a dead session is memoised too
    clock.now += 0.2
    assert cache.get(live) == (False, None)


def test_drop_and_clear_forget_at_once() -> None:
    cache = LocalSessionCache(60.0)
    first, second = uuid.uuid4(), uuid.uuid4()
    cache.put(first, uuid.uuid4())
    cache.put(second, uuid.uuid4())
    cache.drop(first)
    assert cache.get(first) == (False, None)
    assert cache.get(second)[0]
    cache.clear()
    assert cache.get(second) == (False, None)


def test_a_zero_ttl_memoises_nothing_and_the_size_is_bounded() -> None:
    assert LocalSessionCache(0).get(_put(LocalSessionCache(0))) == (False, None)
    cache = LocalSessionCache(60.0, max_entries=3)
    ids = [_put(cache) for _ in range(7)]
    assert sum(cache.get(i)[0] for i in ids) <= 3
    assert cache.get(ids[-1])[0]  # the newest entry is kept


def _put(cache: LocalSessionCache) -> uuid.UUID:
    session_id = uuid.uuid4()
    cache.put(session_id, uuid.uuid4())
    return session_id
