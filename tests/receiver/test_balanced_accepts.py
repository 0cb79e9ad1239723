"""Connections opened at once spread over gunicorn's workers (BalancedAcceptLoop, issue 14):
a real gunicorn with the shipped config and two workers, on a private Redis. asyncio's own
accept loop let the first worker to wake take every waiting connection, so a CRM opening
its connections together was served by one process (one core)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.security.conftest import Web, web_env
from webhook_app.serving import BalancedAcceptLoop
from worker.embedded_redis import RedisServer, free_port

CONNECTIONS = 8
ROUNDS = 6


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    redis_server = RedisServer(appendonly=False).start()
    port = free_port()
    tmp = tmp_path_factory.mktemp("balance")
    web = Web(port, web_env(redis_server.url, port, WEB_CONCURRENCY="2"), tmp / "web.log")
    try:
        web.start()
        yield web
    finally:
        web.stop()
        redis_server.cleanup()


def _round(port: int, tag: str) -> None:
    """CONNECTIONS connections, all established before any is used, one request each (a 404:
    the probes' own access lines are not logged)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
    try:
        for number, sock in enumerate(socks):
            sock.sendall(
                f"GET /balance-probe HTTP/1.1\r\nHost: x\r\nUser-Agent: {tag}-{number}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
        for sock in socks:
            data = b""
            while chunk := sock.recv(65_536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 404"), data[:200]
    finally:
        for sock in socks:
            sock.close()


def _pids_by_agent(web: Web, prefix: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in web.log().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        agent = record.get("user_agent") or ""
        if agent.startswith(prefix) and "pid" in record:
            found[agent] = record["pid"]
    return found


def _wait_for_both_workers(web: Web, timeout: float = 45.0) -> None:
    """gunicorn does not preload the app: each worker imports it after forking, and the
    fixture's /healthz answer proves only one of them ready. Under a loaded machine the
    second can take seconds more, and every connection meanwhile goes to the first, which
    says nothing about how accepts are shared. Warm-up rounds until both have answered."""
    deadline = time.monotonic() + timeout
    number = 0
    while time.monotonic() < deadline:
        _round(web.port, f"warm-{number}")
        number += 1
        if len(set(_pids_by_agent(web, "warm-").values())) == 2:
            return
        time.sleep(0.2)
    raise AssertionError(f"the second worker never answered in {timeout} s: {web.log()[-2000:]}")


def test_connections_opened_at_once_are_served_by_both_workers(two_workers: Web) -> None:
    _wait_for_both_workers(two_workers)
    for number in range(ROUNDS):
        _round(two_workers.port, f"balance-{number}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = _pids_by_agent(two_workers, "balance-")
        if len(pids) == ROUNDS * CONNECTIONS:
            break
        time.sleep(0.1)
    assert len(pids) == ROUNDS * CONNECTIONS, f"access lines found: {len(pids)}"
    assert len(set(pids.values())) == 2, pids
    # Each round's 8 connections were waiting together: asyncio's accept loop gave a whole
    # round to one worker; one accept per wake-up splits most rounds.
    split = sum(
        len({pid for agent, pid in pids.items() if agent.startswith(f"balance-{n}-")}) == 2
        for n in range(ROUNDS)
    )
    assert split >= ROUNDS // 2, f"rounds served by both workers: {split} of {ROUNDS}; {pids}"


def test_the_loop_accepts_one_connection_per_wake_up() -> None:
    """In process: three connections waiting, one readiness event -> one accepted."""
    loop = BalancedAcceptLoop()
    accepted: list[object] = []
    try:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            loop._accept_connection(  # the callback asyncio runs once per readiness event
                lambda: accepted.append(1) or _Sink(), listener, None, None, 100
            )
            loop.run_until_complete(_settle())
            assert len(accepted) == 1
            for _ in range(2):
                loop._accept_connection(
                    lambda: accepted.append(1) or _Sink(), listener, None, None, 100
                )
            loop.run_until_complete(_settle())
            assert len(accepted) == 3
        finally:
            for client in clients:
                client.close()
            listener.close()
    finally:
        loop.close()


class _Sink:
    def connection_made(self, transport: object) -> None:
        self.transport = transport
        transport.close()  # type: ignore[attr-defined]

    def connection_lost(self, exc: object) -> None:
        pass


async def _settle() -> None:
    import asyncio

    for _ in range(5):
        await asyncio.sleep(0)


def _accept_times(pause: float, opens: list[float]) -> list[float]:
    """A real asyncio server on BalancedAcceptLoop(accept_pause=pause); a client connection
    opened at each offset in `opens` (seconds); when each was accepted (seconds from start)."""
    import asyncio

    loop = BalancedAcceptLoop()
    loop.accept_pause = pause
    accepted: list[float] = []
    clients: list[socket.socket] = []
    transports: list[asyncio.BaseTransport] = []

    class Note(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(time.monotonic() - started)
            transports.append(transport)

    async def run() -> None:
        server = await loop.create_server(Note, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for offset in opens:
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        deadline = time.monotonic() + 5
        while len(accepted) < len(opens) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for transport in transports:
            transport.close()
        server.close()
        await server.wait_closed()

    started = time.monotonic()
    try:
        loop.run_until_complete(run())
    finally:
        for client in clients:
            client.close()
        loop.close()
    return accepted


def test_a_loop_that_took_one_while_more_wait_pauses_before_the_next() -> None:
    """Three connections waiting at once: one, then each next one only after the pause
    (the time the other workers get to take them)."""
    pause = 0.1
    times = _accept_times(pause, [0.0, 0.0, 0.0])
    assert len(times) == 3, times
    assert times[1] - times[0] >= pause * 0.9, times
    assert times[2] - times[1] >= pause * 0.9, times


def test_a_lone_connection_is_never_delayed() -> None:
    """Nothing else waiting: no pause, so a connection opened later is taken at once, as
    are all of them without a pause (one worker)."""
    times = _accept_times(0.3, [0.0, 0.05])
    assert len(times) == 2, times
    assert times[1] - 0.05 < 0.2, times
    burst = _accept_times(0.0, [0.0, 0.0, 0.0])
    assert len(burst) == 3, burst
    assert burst[2] - burst[0] < 0.2, burst
