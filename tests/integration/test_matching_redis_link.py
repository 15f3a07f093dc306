"""The matching shard's own Redis connection (brokerx_matching.redis_link): replies,
errors as redis-py raises them, and what happens when the connection goes away."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokerx_matching.redis_link import RedisLink, pack
from tests.support.servers import ServerUrls


def test_pack_writes_resp() -> None:
    assert pack(["SET", b"k", 12, 2.5, "é"]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n2.5\r\n$2\r\n\xc3\xa9\r\n"
    )


async def test_commands_run_on_the_configured_database(servers: ServerUrls, redis: Redis) -> None:
    link = RedisLink(servers.redis_url, timeout=5)
    try:
        assert await link.execute("SET", "link:key", b"\x00value") == b"OK"
        # The same database as the shared client (the URL's /<db> was selected).
        assert await redis.get("link:key") == b"\x00value"
        assert await link.execute("XADD", "link:stream", "*", "data", "x") is not None
        assert await link.execute("XLEN", "link:stream") == 1
        assert await link.execute("GET", "link:missing") is None
    finally:
        link.close()


async def test_errors_are_redis_py_exceptions(servers: ServerUrls, redis: Redis) -> None:
    link = RedisLink(servers.redis_url, timeout=5)
    try:
        with pytest.raises(ResponseError, match="NOGROUP"):
            await link.execute(
                "XREADGROUP", "GROUP", "nope", "c", "COUNT", 1, "STREAMS", "link:s", ">"
            )
        with pytest.raises(NoScriptError):
            await link.execute("EVALSHA", "0" * 40, 0)
        assert await link.execute("PING") == b"PONG"  # the connection is still good
    finally:
        link.close()


async def test_a_lost_connection_fails_the_command_and_the_next_one_reconnects(
    servers: ServerUrls, redis: Redis
) -> None:
    link = RedisLink(servers.redis_url, timeout=5)
    try:
        name = f"link-{id(link)}"
        await link.execute("CLIENT", "SETNAME", name)
        await redis.xgroup_create("link:s", "g", id="$", mkstream=True)
        blocked = asyncio.create_task(
            link.execute("XREADGROUP", "GROUP", "g", "c", "BLOCK", 5000, "STREAMS", "link:s", ">")
        )
        await asyncio.sleep(0.2)
        for client in await redis.client_list():
            if client["name"] == name:
                await redis.client_kill_filter(_id=client["id"])
        with pytest.raises(RedisConnectionError):
            await blocked
        assert await link.execute("PING") == b"PONG"
    finally:
        link.close()


async def test_no_answer_in_time_is_a_timeout_then_the_link_reconnects(
    servers: ServerUrls, redis: Redis
) -> None:
    link = RedisLink(servers.redis_url, timeout=0.3)
    try:
        await redis.xgroup_create("link:t", "g", id="$", mkstream=True)
        with pytest.raises(RedisTimeoutError):
            await link.execute(
                "XREADGROUP", "GROUP", "g", "c", "BLOCK", 2000, "STREAMS", "link:t", ">"
            )
        assert await link.execute("PING") == b"PONG"
    finally:
        link.close()


async def test_an_unreachable_server_is_a_connection_error() -> None:
    link = RedisLink("redis://127.0.0.1:1/0", timeout=1, connect_timeout=0.5)
    with pytest.raises(RedisConnectionError):
        await link.execute("PING")
