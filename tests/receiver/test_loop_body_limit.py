"""Which webhook POSTs BufferedWSGI answers on the event loop (issue 14): a body up to
`loop_body_bytes` (64 KiB) is verified and parsed on the loop, a larger one on the threads,
so a 1 MiB JSON parse never stalls the loop's other connections. The real app on the test
Redis, driven through BufferedWSGI's ASGI interface."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from tests.receiver.conftest import close_app
from tests.receiver.senders import dumps, hubspot_event, make_settings
from tests.receiver.test_fastpath import Request, _hubspot
from webhook_app import create_app
from webhook_app.fastpath import WebhookFastPath
from webhook_app.serving import DEFAULT_LOOP_BODY_BYTES, BufferedWSGI
from worker.state import INBOX


class _LoopSpy:
    """The app's LoopHandler, recording the requests it answers on the loop."""

    def __init__(self, fast: WebhookFastPath, seen: list[str]) -> None:
        self.fast, self.seen = fast, seen

    def async_ready(self) -> bool:
        return self.fast.async_ready()

    def takes_async(self, method: str, path: str) -> bool:
        return self.fast.takes_async(method, path)

    async def respond_async(self, environ: dict[str, Any], in_thread: Any) -> Any:
        self.seen.append("loop")
        return await self.fast.respond_async(environ, in_thread)


async def _call(asgi: BufferedWSGI, request: Request) -> tuple[int, bytes]:
    method, path, body, headers = request
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in {**headers, "Content-Length": str(len(body))}.items()
        ],
        "server": ("hooks.example.net", 443),
        "client": ("127.0.0.1", 40000),
        "scheme": "https",
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asgi(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def _batch(first_id: int, count: int, value_chars: int = 10) -> Request:
    events = [
        hubspot_event(eventId=first_id + n, objectId=70_000 + n, propertyValue="v" * value_chars)
        for n in range(count)
    ]
    return _hubspot(dumps(events))


def test_small_bodies_on_the_loop_big_ones_on_the_threads(
    redis_url: str, redis_client: Any
) -> None:
    app = create_app(make_settings(redis_url))
    fast = app.wsgi_app
    assert isinstance(fast, WebhookFastPath)
    seen: list[str] = []

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(f"thread:{threading.current_thread().name.split('_')[0]}")
        return app(environ, start_response)

    asgi = BufferedWSGI(wsgi, threads=2, fast=_LoopSpy(fast, seen))
    small = _batch(1, 1)
    big = _batch(100, 100, value_chars=1_000)  # HubSpot's most events, ~110 KB
    assert len(small[2]) <= DEFAULT_LOOP_BODY_BYTES < len(big[2]) <= 1_048_576

    async def run() -> list[tuple[int, bytes]]:
        try:
            return [await _call(asgi, small), await _call(asgi, big), await _call(asgi, small)]
        finally:
            if fast._async_submitter is not None:
                await fast._async_submitter.close()

    try:
        answers = asyncio.run(run())
    finally:
        asgi.executor.shutdown(wait=True)
        close_app(app)
    assert seen == ["loop", "thread:wsgi", "loop"]
    statuses = [status for status, _ in answers]
    assert statuses == [200, 200, 200], answers
    assert [json.loads(body)["accepted"] for _, body in answers] == [1, 100, 1]
    # The repeated small batch is a duplicate of the first: 101 distinct events stored.
    assert redis_client.hlen(INBOX) == 101
