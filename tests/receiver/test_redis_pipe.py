"""worker.redis_pipe.RedisPipe, the receiver loop's own Redis connection (issue 14), against
private redis-servers: replies reach their callbacks in order, an error reply is handed
over without breaking the stream, AUTH/SELECT/CLIENT SETNAME on connect (TCP and a unix
socket), a lost connection fails its waiters and the next connect works, a silent Redis is
closed by `stale`, and a refused password is an error that does not show it."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hiredis import pack_command

from worker.embedded_redis import RedisServer, redis_argv
from worker.redis_pipe import RedisPipe, ReplyError


def _call(pipe: RedisPipe, *commands: tuple[Any, ...]) -> list[Any]:
    """Every command written at once (pipelined), then every reply, in order."""

    async def run() -> list[Any]:
        await pipe.connect()
        loop = asyncio.get_running_loop()
        futures = []
        for command in commands:
            future: asyncio.Future[Any] = loop.create_future()
            pipe.send(pack_command(command), future.set_result)
            futures.append(future)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), 5))
        finally:
            pipe.close()

    return asyncio.run(run())


def test_replies_come_in_order_and_an_error_reply_does_not_break_the_stream(
    own_redis: RedisServer,
) -> None:
    pipe = RedisPipe(port=own_redis.port, db=3, name="pipe-test")
    replies = _call(
        pipe,
        ("SET", "a", "1"),
        ("INCR", "a"),
        ("HSET", "a", "f", "v"),  # WRONGTYPE
        ("GET", "a"),
        ("CLIENT", "GETNAME"),
        ("EVAL", "return {ARGV[1], tonumber(ARGV[2]) + 1}", 0, "x\u00e9", 41),
    )
    assert replies[:2] == [b"OK", 2]
    assert isinstance(replies[2], ReplyError)
    assert "WRONGTYPE" in str(replies[2])
    assert replies[3:] == [b"2", b"pipe-test", ["x\u00e9".encode(), 42]]
    assert redis.Redis(port=own_redis.port, db=3).get("a") == b"2"  # SELECT 3 took effect


def test_a_lost_connection_fails_its_waiters_and_the_next_connect_works(
    own_redis: RedisServer,
) -> None:
    pipe = RedisPipe(port=own_redis.port, name="pipe-lost")
    outcomes: list[Any] = []

    async def run() -> None:
        await pipe.connect()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        pipe.send(pack_command(("BLPOP", "never", 0)), done.set_result)
        await asyncio.sleep(0.1)
        redis.Redis(port=own_redis.port).client_kill_filter(_type=None, skipme=True)
        outcomes.append(await asyncio.wait_for(done, 5))
        assert not pipe.connected
        with pytest.raises(ConnectionError):
            pipe.send(pack_command(("PING",)), outcomes.append)
        await pipe.connect()
        again: asyncio.Future[Any] = loop.create_future()
        pipe.send(pack_command(("PING",)), again.set_result)
        outcomes.append(await asyncio.wait_for(again, 5))
        pipe.close()

    asyncio.run(run())
    assert isinstance(outcomes[0], ConnectionError)
    assert outcomes[1] == b"PONG"


def test_stale_closes_a_connection_redis_stopped_answering(own_redis: RedisServer) -> None:
    pipe = RedisPipe(port=own_redis.port)
    control = redis.Redis(port=own_redis.port)

    async def run() -> tuple[bool, bool, Any]:
        await pipe.connect()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        control.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        pipe.send(pack_command(("SET", "k", "v")), done.set_result)
        early = pipe.stale(0.2)  # not waited long enough yet
        await asyncio.sleep(0.3)
        late = pipe.stale(0.2)
        return early, late, await asyncio.wait_for(done, 5)

    try:
        early, late, reply = asyncio.run(run())
    finally:
        control.execute_command("CLIENT", "UNPAUSE")
    assert (early, late) == (False, True)
    assert isinstance(reply, ConnectionError)
    assert not pipe.connected


def test_auth_with_a_user_and_a_refused_password(own_redis: RedisServer) -> None:
    admin = redis.Redis(port=own_redis.port)
    admin.execute_command("ACL", "SETUSER", "hooks", "on", ">s3cret-pass", "~*", "+@all")
    pipe = RedisPipe(port=own_redis.port, username="hooks", password="s3cret-pass")
    assert _call(pipe, ("ACL", "WHOAMI")) == [b"hooks"]

    wrong = RedisPipe(port=own_redis.port, username="hooks", password="not-the-one-xyz")
    with pytest.raises(ConnectionError) as caught:
        asyncio.run(wrong.connect())
    assert "AUTH refused" in str(caught.value)
    assert "not-the-one-xyz" not in str(caught.value)


def test_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    argv = [*redis_argv(0, tmp_path, appendonly=False), "--unixsocket", str(sock)]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        pipe = RedisPipe(path=str(sock), name="pipe-unix")
        assert _call(pipe, ("PING",), ("CLIENT", "GETNAME")) == [b"PONG", b"pipe-unix"]
    finally:
        process.kill()
        process.wait(10)


def test_nothing_listening_is_a_quick_connection_error() -> None:
    from worker.embedded_redis import free_port

    pipe = RedisPipe(port=free_port(), connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(pipe.connect())
    assert time.monotonic() - started < 1.0
