"""Webhook POSTs answered on the event loop (RECEIVER_ASYNC_HANDOFF, issue 14), through a
real gunicorn with the shipped config (deploy/gunicorn.conf.py, BufferingWorker) on a
private Redis: the same answers, stored records, counters and log lines as the thread path
(RECEIVER_ASYNC_HANDOFF=false, which tests/receiver/test_fastpath.py holds to the Flask
views), many requests in flight on one Redis wait without holding threads, and a Redis
that is down is a quick 503."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from werkzeug.test import EnvironBuilder

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    PUBLIC_BASE_URL,
    SALESFORCE_TOKEN,
    dumps,
    hubspot_event,
    ingest_refs,
    make_settings,
    payload,
)
from tests.receiver.test_fastpath import XML, Request, _cases, _generic, _hubspot
from tests.security.conftest import Web, web_env
from webhook_app import create_app
from webhook_app.fastpath import WebhookFastPath
from worker.embedded_redis import RedisServer, free_port
from worker.handoff import LOOP_CLIENT_NAME
from worker.metrics import COUNTERS_KEY
from worker.state import INBOX

Answer = tuple[int, list[tuple[str, str]], bytes]


def _send(port: int, request: Request, timeout: float = 10.0) -> Answer:
    """One request on its own connection (raw HTTP/1.1: a declared length may lie)."""
    method, path, body, headers = request
    head = {"Host": "hooks.example.net", "Connection": "close", **headers}
    if "Transfer-Encoding" not in head:
        head.setdefault("Content-Length", str(len(body)))
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw.encode("latin-1") + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65_536):
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = [tuple(line.split(": ", 1)) for line in lines[1:]]
    # Date is the clock's; Allow lists a set (its order varies by process); the rest must match.
    kept = [
        (k.lower(), ", ".join(sorted(v.split(", "))) if k.lower() == "allow" else v)
        for k, v in fields
        if k.lower() != "date"
    ]
    return status, kept, rest


def _web(redis_url: str, tmp: Path, name: str, **overrides: str) -> Web:
    port = free_port()
    env = web_env(
        redis_url,
        port,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        RECEIVER_REDIS_TIMEOUT_SECONDS="3",  # test_requests_in_flight_... holds Redis 1.5 s
        **overrides,
    )
    env["SALESFORCE_TOKEN"] = SALESFORCE_TOKEN
    return Web(port, env, tmp / f"{name}.log").start()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=False).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def servers(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Web]]:
    """`loop` (the default: RECEIVER_ASYNC_HANDOFF on) on db 1, `threads` (off) on db 2."""
    tmp = tmp_path_factory.mktemp("loop")
    base = redis_server.url.rsplit("/", 1)[0]
    started: dict[str, Web] = {}
    try:
        started["loop"] = _web(f"{base}/1", tmp, "loop")
        started["threads"] = _web(f"{base}/2", tmp, "threads", RECEIVER_ASYNC_HANDOFF="false")
        yield started
    finally:
        for web in started.values():
            web.stop()


def _db(redis_server: RedisServer, db: int) -> redis.Redis:
    return redis.Redis.from_url(f"{redis_server.url.rsplit('/', 1)[0]}/{db}")


def _log_records(web: Web) -> list[dict[str, Any]]:
    out = []
    for line in web.log().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _cases_with_token() -> dict[str, Request]:
    cases = _cases()
    xml = payload("salesforce", "two-contacts.xml")
    cases["salesforce ack with token"] = (
        "POST",
        f"/webhooks/salesforce?token={SALESFORCE_TOKEN}",
        xml,
        XML,
    )
    cases["salesforce fault with token"] = (
        "POST",
        f"/webhooks/salesforce?token={SALESFORCE_TOKEN}",
        b"<not-soap/>",
        XML,
    )
    cases["hubspot chunked body"] = _chunked(_hubspot(dumps([hubspot_event(eventId=91)])))
    return cases


def _chunked(request: Request) -> Request:
    method, path, body, headers = request
    framed = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return method, path, framed, {**headers, "Transfer-Encoding": "chunked"}


def test_loop_path_answers_stores_counts_and_logs_as_the_threads(
    servers: dict[str, Web], redis_server: RedisServer
) -> None:
    """Every case (good and bad input, the three sources, routes Flask answers) gets the same
    status, headers and body from both servers; both databases end with the same inbox,
    broker messages, counters and dead letters; the access and receiver log lines agree."""
    for db in (1, 2):
        _db(redis_server, db).flushdb()
    answers: dict[str, dict[str, Answer]] = {"loop": {}, "threads": {}}
    for name, request in _cases_with_token().items():
        for way, web in servers.items():
            answers[way][name] = _send(web.port, request)
        assert answers["loop"][name] == answers["threads"][name], name
        assert answers["loop"][name][0] < 500 or name.startswith("hubspot too large"), name
    assert answers["loop"]["hubspot accepted"][0] == 200
    assert answers["loop"]["hubspot chunked body"][0] == 200
    assert answers["loop"]["hubspot bad signature"][0] == 401
    assert b"<Ack>true</Ack>" in answers["loop"]["salesforce ack with token"][2]

    loop_db, threads_db = _db(redis_server, 1), _db(redis_server, 2)
    inbox = set(loop_db.hkeys(INBOX))
    assert inbox
    assert inbox == set(threads_db.hkeys(INBOX))
    assert len(ingest_refs(loop_db)) == len(ingest_refs(threads_db)) >= 4
    assert loop_db.hgetall(COUNTERS_KEY) == threads_db.hgetall(COUNTERS_KEY)
    dead = set(loop_db.keys("lls:dlq*"))
    assert dead
    assert {k: loop_db.type(k) for k in dead} == {k: threads_db.type(k) for k in dead}

    time.sleep(0.3)  # log lines are flushed by the worker process

    def lines(web: Web) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        records = _log_records(web)
        access = [
            (r["method"], r["path"], r["status"], r["size"])
            for r in records
            if r.get("logger") == "gunicorn.access" or ("method" in r and "user_agent" in r)
        ]
        receiver = [
            (r["source"], r["status"], r["outcome"], r["accepted"], r["dead_lettered"])
            for r in records
            if "outcome" in r and "source" in r
        ]
        return access, receiver

    loop_access, loop_receiver = lines(servers["loop"])
    threads_access, threads_receiver = lines(servers["threads"])
    assert len(loop_access) >= len(_cases_with_token())
    assert loop_access == threads_access
    assert len(loop_receiver) >= 10
    assert loop_receiver == threads_receiver


def test_requests_in_flight_wait_for_redis_without_threads(
    servers: dict[str, Web], redis_server: RedisServer
) -> None:
    """With Redis holding writes for 1.5 s, 12 webhooks (3x the worker's 4 threads) are all
    in flight on Redis at once, on the loop's own connections (grouped into fewer EVALs
    when they reach their hand-off in one loop iteration), none on a thread's connection,
    and all answered 200."""
    client = _db(redis_server, 1)
    client.flushdb()
    requests = [
        _hubspot(dumps([hubspot_event(eventId=5000 + n, objectId=60_000 + n)])) for n in range(12)
    ]
    results: list[Answer] = []
    lock = threading.Lock()

    def post(request: Request) -> None:
        answer = _send(servers["loop"].port, request)
        with lock:
            results.append(answer)

    client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    threads = [threading.Thread(target=post, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    clients = client.client_list()
    for thread in threads:
        thread.join(10)
    # Clients with a command held by the pause (parsed, not run; idle ones hold none), but
    # this test's own CLIENT LIST.
    waiting = [
        c
        for c in clients
        if (int(c.get("argv-mem", 0)) or int(c.get("qbuf", 0))) and c.get("cmd") != "client|list"
    ]
    assert waiting, clients
    assert {c.get("name") for c in waiting} == {LOOP_CLIENT_NAME}, waiting
    assert [status for status, _, _ in results] == [200] * 12
    assert client.hlen(INBOX) == 12
    refs = ingest_refs(client)
    assert sum(len(r) for r in refs) == 12
    assert 1 <= len(refs) <= 12


def test_redis_down_is_a_quick_503(tmp_path: Path) -> None:
    """Nothing listens on REDIS_URL: the loop path answers 503 broker_unavailable with
    Retry-After, each within a second, and the server keeps answering /healthz."""
    web = _web(f"redis://127.0.0.1:{free_port()}/0", tmp_path, "down")
    try:
        for n in range(5):
            started = time.perf_counter()
            status, headers, body = _send(
                web.port, _hubspot(dumps([hubspot_event(eventId=n)])), timeout=5
            )
            assert time.perf_counter() - started < 1.0
            assert status == 503
            assert ("retry-after", "30") in headers
            assert json.loads(body)["error"]["code"] == "broker_unavailable"
        generic = json.loads(payload("generic", "single.json"))
        status, _, body = _send(web.port, _generic(generic, "msg_down"), timeout=5)
        assert status == 503
        assert web.healthy()
    finally:
        web.stop()


def test_the_setting_turns_the_loop_path_off(
    servers: dict[str, Web], redis_server: RedisServer
) -> None:
    """RECEIVER_ASYNC_HANDOFF=false: webhooks are accepted through the threads, and Redis
    never sees a loop connection from that server."""
    for db in (1, 2):
        _db(redis_server, db).flushdb()
    request = _hubspot(dumps([hubspot_event(eventId=4242)]))
    assert _send(servers["threads"].port, request)[0] == 200
    assert _send(servers["loop"].port, request)[0] == 200
    by_db: dict[int, int] = {}
    for c in _db(redis_server, 1).client_list():
        if c.get("name") == LOOP_CLIENT_NAME:
            by_db[int(c["db"])] = by_db.get(int(c["db"]), 0) + 1
    assert by_db.get(1, 0) >= 1
    assert by_db.get(2, 0) == 0
    assert _db(redis_server, 2).hlen(INBOX) == 1


def _environ_of(request: Request) -> dict[str, Any]:
    method, path, body, headers = request
    environ: dict[str, Any] = EnvironBuilder(
        path=path, method=method, data=body, headers=headers, base_url=PUBLIC_BASE_URL
    ).get_environ()
    return environ


@pytest.mark.parametrize(
    ("overrides", "events", "on_the_loop"),
    [
        ({}, [hubspot_event(eventId=1)], True),
        ({}, [hubspot_event(eventId=2), hubspot_event(eventId=3, occurredAt="soon")], False),
        # No replica here: WAIT counts 0 of 1, a 503.
        ({"REDIS_WAIT_REPLICAS": "1"}, [hubspot_event(eventId=4)], False),
        ({"RECEIVER_DIRECT_PUBLISH": "false"}, [hubspot_event(eventId=5)], False),
    ],
    ids=["common case", "dead letters", "wait replicas", "kombu publish"],
)
def test_only_the_common_hand_off_is_awaited_on_the_loop(
    redis_url: str, overrides: dict[str, str], events: list[dict[str, Any]], on_the_loop: bool
) -> None:
    """respond_async awaits the EVAL itself for a batch without dead letters (direct publish,
    no WAIT); every other hand-off goes to the Enqueuer on a thread (`in_thread`)."""
    app = create_app(make_settings(redis_url, **overrides))
    fast = app.wsgi_app
    assert isinstance(fast, WebhookFastPath)
    sent_to_threads: list[str] = []

    async def in_thread(function: Any, *args: Any) -> Any:
        sent_to_threads.append(function.__name__)
        return function(*args)

    async def run() -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            return await fast.respond_async(_environ_of(_hubspot(dumps(events))), in_thread)
        finally:
            if fast._async_submitter is not None:
                await fast._async_submitter.close()

    try:
        status, _, body = asyncio.run(run())
    finally:
        close_app(app)
    if overrides.get("REDIS_WAIT_REPLICAS"):
        assert status == 503
        assert json.loads(body)["error"]["code"] == "broker_unavailable"
        assert sent_to_threads == ["submit", "count_refusal"]
        return
    assert status == 200, body
    assert json.loads(body)["accepted"] == 1
    assert sent_to_threads == ([] if on_the_loop else ["submit"])


def test_a_restarted_redis_is_used_again_at_once(tmp_path: Path) -> None:
    """The loop's pooled connections die with Redis: after a restart on the same port the
    next webhook is accepted (a broken connection is retried once, as on the threads) and
    lands in the new Redis."""
    server = RedisServer(appendonly=False).start()
    web = _web(server.url, tmp_path, "restart")
    try:
        request = _hubspot(dumps([hubspot_event(eventId=1, objectId=70_001)]))
        assert _send(web.port, request)[0] == 200
        server.kill()
        server.start()
        started = time.perf_counter()
        status, _, body = _send(
            web.port, _hubspot(dumps([hubspot_event(eventId=2, objectId=70_002)])), timeout=5
        )
        assert time.perf_counter() - started < 2.0
        assert status == 200, body
        assert redis.Redis.from_url(server.url).hlen(INBOX) == 1
    finally:
        web.stop()
        server.cleanup()
