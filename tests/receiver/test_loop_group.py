"""Group commit on the event loop (AsyncSubmitter, issue 14): the webhook POSTs that reach
their hand-off in the same loop iteration share one EVAL per source, on the test's private
Redis: every event lands in the inbox, one ingest message names them all, each request's
counters are summed, every request is answered with the group's outcome, a request whose
wait timed out before the flush is left out, and a group whose connection was lost with
its EVAL unanswered is sent once more on a new connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from tests.receiver.conftest import close_app
from tests.receiver.senders import dumps, hubspot_event, ingest_refs, make_settings, payload
from tests.receiver.test_fastpath import Request, _generic, _hubspot
from tests.receiver.test_loop_path import _environ_of
from webhook_app import create_app
from webhook_app.fastpath import WebhookFastPath
from webhook_app.intake import EXTENSION
from worker.embedded_redis import RedisServer
from worker.metrics import COUNTERS_KEY, Metrics
from worker.state import INBOX

Answer = tuple[int, list[tuple[str, str]], bytes]


@pytest.fixture
def fast(redis_url: str) -> Iterator[WebhookFastPath]:
    app = create_app(make_settings(redis_url))
    path = app.wsgi_app
    assert isinstance(path, WebhookFastPath)
    try:
        yield path
    finally:
        close_app(app)


async def _no_threads(function: Any, *args: Any) -> Any:
    """Only a refusal's best-effort counters may go to a thread (run here, inline)."""
    assert function.__name__ == "count_refusal", f"{function.__name__} went to a thread"
    return function(*args)


def _answer_all(fast: WebhookFastPath, requests: list[Request]) -> list[Answer]:
    """Every request answered by respond_async on one loop, all started in one iteration."""

    async def run() -> list[Answer]:
        try:
            return list(
                await asyncio.gather(
                    *(fast.respond_async(_environ_of(r), _no_threads) for r in requests)
                )
            )
        finally:
            if fast._async_submitter is not None:
                await fast._async_submitter.close()

    return asyncio.run(run())


def _counter(client: redis.Redis, name: str) -> int:
    """Counter `name` summed over both sources."""
    return sum(
        int(client.hget(COUNTERS_KEY, Metrics.field(name, source=source)) or 0)
        for source in ("hubspot", "generic")
    )


def test_requests_of_one_iteration_share_one_eval_per_source(
    fast: WebhookFastPath, redis_client: redis.Redis
) -> None:
    hubspot = [
        _hubspot(dumps([hubspot_event(eventId=100 + n, objectId=80_000 + n)])) for n in range(6)
    ]
    two = _hubspot(
        dumps([hubspot_event(eventId=200, objectId=80_100), hubspot_event(eventId=201)])
    )
    message = json.loads(payload("generic", "single.json"))
    generic = [
        _generic({**message, "object_id": f"0035g00000XyZ{n:02d}AAB"}, msg_id=f"msg_group_{n}")
        for n in range(3)
    ]
    answers = _answer_all(fast, [*hubspot, two, *generic])
    assert [status for status, _, _ in answers] == [200] * 10
    assert [json.loads(body)["accepted"] for _, _, body in answers] == [1] * 6 + [2] + [1] * 3

    messages = ingest_refs(redis_client)
    # One message per source (grouped), naming every event of its requests.
    assert sorted(len(refs) for refs in messages) == [3, 8]
    assert {ref for refs in messages for ref in refs} == {
        key.decode() for key in redis_client.hkeys(INBOX)
    }
    assert redis_client.hlen(INBOX) == 11
    # Per-request counters, summed: 10 webhooks received, 11 events enqueued.
    assert _counter(redis_client, "webhooks_received") == 10
    assert _counter(redis_client, "events_enqueued") == 11


def test_a_group_is_at_most_group_events_events(
    fast: WebhookFastPath, redis_client: redis.Redis
) -> None:
    fast._submitter(fast.app.extensions[EXTENSION]).group_events = 4
    requests = [
        _hubspot(dumps([hubspot_event(eventId=300 + n, objectId=81_000 + n)])) for n in range(10)
    ]
    answers = _answer_all(fast, requests)
    assert [status for status, _, _ in answers] == [200] * 10
    assert sorted(len(refs) for refs in ingest_refs(redis_client)) == [2, 4, 4]
    assert redis_client.hlen(INBOX) == 10


def test_a_failed_group_answers_every_request_503_and_writes_nothing(
    own_redis: RedisServer,
) -> None:
    app: Flask = create_app(make_settings(own_redis.url))
    fast = app.wsgi_app
    assert isinstance(fast, WebhookFastPath)
    own_redis.kill()  # down before the flush: the group's EVAL fails
    requests = [
        _hubspot(dumps([hubspot_event(eventId=400 + n, objectId=82_000 + n)])) for n in range(5)
    ]
    try:
        answers = _answer_all(fast, requests)
    finally:
        close_app(app)
    assert [status for status, _, _ in answers] == [503] * 5
    codes = {json.loads(body)["error"]["code"] for _, _, body in answers}
    assert codes == {"broker_unavailable"}
    own_redis.start()
    client = redis.Redis.from_url(own_redis.url)
    assert client.hlen(INBOX) == 0
    assert ingest_refs(client) == []


def test_a_request_whose_wait_timed_out_is_left_out_of_the_group(
    fast: WebhookFastPath, redis_client: redis.Redis
) -> None:
    """Two requests join the same flush; one is cancelled (its wait timed out) before the
    flush runs: it is not written, the other is."""
    requests = [
        _hubspot(dumps([hubspot_event(eventId=500 + n, objectId=83_000 + n)])) for n in range(2)
    ]

    async def run() -> list[Any]:
        tasks = [
            asyncio.ensure_future(fast.respond_async(_environ_of(r), _no_threads))
            for r in requests
        ]
        await asyncio.sleep(0)  # both wait for the flush, which is scheduled, not yet run
        tasks[0].cancel()
        try:
            return list(await asyncio.gather(*tasks, return_exceptions=True))
        finally:
            assert fast._async_submitter is not None
            await fast._async_submitter.close()

    gone, kept = asyncio.run(run())
    assert isinstance(gone, asyncio.CancelledError)
    assert kept[0] == 200
    refs = ingest_refs(redis_client)
    assert len(refs) == 1
    assert len(refs[0]) == 1
    assert redis_client.hlen(INBOX) == 1


def test_a_connection_lost_with_the_eval_unanswered_is_tried_once_more(
    fast: WebhookFastPath, redis_client: redis.Redis
) -> None:
    """Redis holds writes; the loop's connection is killed with the group's EVAL waiting on
    it (never run). The group is sent again on a new connection, and the webhook is
    answered 200 once Redis takes writes again (within RECEIVER_REDIS_TIMEOUT_SECONDS,
    0.5 s): its event recorded once."""
    from worker.handoff import LOOP_CLIENT_NAME

    request = _hubspot(dumps([hubspot_event(eventId=600, objectId=84_000)]))

    async def held() -> tuple[Answer, dict[str, Any]]:
        submitter = fast._submitter(fast.app.extensions[EXTENSION])
        await submitter.pipe.connect()
        redis_client.execute_command("CLIENT", "PAUSE", 300, "WRITE")
        task = asyncio.ensure_future(fast.respond_async(_environ_of(request), _no_threads))
        await asyncio.sleep(0.1)  # flushed: the EVAL waits in Redis
        (loop_client,) = [
            c for c in redis_client.client_list() if c.get("name") == LOOP_CLIENT_NAME
        ]
        redis_client.execute_command("CLIENT", "KILL", "ID", loop_client["id"])
        try:
            return await task, loop_client
        finally:
            await submitter.close()

    (status, _, body), killed = asyncio.run(held())
    assert killed["cmd"] == "eval", killed  # the EVAL was the one held when killed
    assert status == 200, body
    assert redis_client.hlen(INBOX) == 1
    assert [len(refs) for refs in ingest_refs(redis_client)] == [1]
