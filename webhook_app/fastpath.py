"""The webhook POST routes without Flask's per-request machinery (issue 14).

`WebhookFastPath` wraps the Flask app's `wsgi_app` (Flask's documented middleware hook):
a `POST` whose PATH_INFO is exactly a source's path (`/webhooks/hubspot`, `/webhooks/
salesforce`, `/webhooks/generic`) runs `intake.respond` with a plain request object and
the receiver from `app.extensions`, with no request or app context, URL matching or
Response object; every other request (another method, another path, a trailing slash,
health, metrics) goes to Flask unchanged. That saved ~90 µs of ~400 µs per single-event
request (docs/benchmarks-more.md, "Receiver: where the time goes").

The answers are the Flask views' answers, byte for byte: the same `respond` (checks, error
contract, counters, log line); JSON bodies rendered as `jsonify` renders them (the app's
JSON provider, compact unless debug, a trailing newline, `Content-Type: application/json`,
`Content-Length`, then `Retry-After` on a 503); a source with its own answers (Salesforce's
SOAP) answers with its own Response objects, as under Flask.
`tests/receiver/test_fastpath.py` compares both ways in for good and bad requests.

Under the shipped BufferingWorker the same requests are answered on the event loop
(`respond_async`, RECEIVER_ASYNC_HANDOFF): the same `intake.respond_steps`, with the
common hand-off awaited (worker.handoff.AsyncSubmitter) instead of blocking a thread
(`tests/receiver/test_loop_path.py`, through gunicorn).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from flask import Flask, Request, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.http import HTTP_STATUS_CODES

from webhook_app.errors import ReceiverError, json_error
from webhook_app.intake import (
    EXTENSION,
    SUBMIT,
    HasSource,
    Receiver,
    Source,
    accepted_json,
    respond,
    respond_steps,
)
from worker.batch import Batch
from worker.handoff import AsyncSubmitter

# (status, WSGI headers, body)
Answer = tuple[int, list[tuple[str, str]], bytes]
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
# Runs a blocking call on the server's threads: `await in_thread(function, *args)`.
InThread = Callable[..., Awaitable[Any]]


class WebhookFastPath:
    """WSGI middleware: the sources' POST routes answered directly, the rest by Flask."""

    def __init__(self, app: Flask, modules: Iterable[HasSource]) -> None:
        self.app = app
        self.flask_wsgi: WSGIApp = app.wsgi_app
        # path -> source module; its SOURCE is read at each request, as the views read it.
        self.routes = {module.SOURCE.path: module for module in modules if module.SOURCE.path}
        self._async_submitter: AsyncSubmitter | None = None
        self._accepted: dict[tuple[int, int, int], Answer] = {}

    @classmethod
    def install(cls, app: Flask, modules: Iterable[HasSource]) -> None:
        """Put the fast path in front of `app` (not when a custom JSON provider is set:
        its rendering could differ from what this module writes)."""
        if type(app.json) is DefaultJSONProvider:
            app.wsgi_app = cls(app, modules)  # type: ignore[method-assign]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        module = self.routes.get(environ.get("PATH_INFO", ""))
        if module is None or environ.get("REQUEST_METHOD") != "POST":
            return self.flask_wsgi(environ, start_response)
        status, headers, body = respond(*self._request(module.SOURCE, environ), _status)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", headers)
        return [body]

    def takes_async(self, method: str, path: str) -> bool:
        """True for the requests `respond_async` answers (a POST to a source's path)."""
        return method == "POST" and path in self.routes

    async def respond_async(self, environ: dict[str, Any], in_thread: InThread) -> Answer:
        """A webhook POST (`takes_async`) answered on the event loop: `intake.respond_steps`
        (checks, parsing, answers, counters, log line: the same as `__call__`) with the
        common hand-off awaited (`AsyncSubmitter`); any other hand-off (dead letters,
        REDIS_WAIT_REPLICAS, metrics only) and refusal counters run on a thread through
        `in_thread`, as blocking calls of the Enqueuer."""
        source = self.routes[environ["PATH_INFO"]].SOURCE
        receiver, req, accepted, refused = self._request(source, environ)[1:]
        submitter = self._submitter(receiver)
        enqueuer = receiver.enqueuer
        steps = respond_steps(source, receiver, req, accepted, refused, _status)
        error: Exception | None = None
        while True:
            try:
                action, name, value = steps.send(None) if error is None else steps.throw(error)
            except StopIteration as stop:
                answer: Answer = stop.value
                return answer
            error = None
            try:
                if action == SUBMIT and submitter.fits(value):
                    await submitter.submit(name, value)
                elif action == SUBMIT:
                    await in_thread(enqueuer.submit, name, value)
                else:
                    await in_thread(enqueuer.count_refusal, name, value)
            except Exception as exc:  # noqa: BLE001 - handed back to the steps, which answer
                error = exc

    def async_ready(self) -> bool:
        """True when `respond_async` can hand off on the loop (RECEIVER_ASYNC_HANDOFF on and
        a Redis connection the loop can open: not Sentinel, not TLS)."""
        receiver = self.app.extensions[EXTENSION]
        return bool(receiver.settings.receiver_async_handoff) and AsyncSubmitter.available(
            receiver.enqueuer
        )

    def _submitter(self, receiver: Receiver) -> AsyncSubmitter:
        # Built on first use: in the worker process, on its event loop.
        if self._async_submitter is None or self._async_submitter.enqueuer is not receiver.enqueuer:
            self._async_submitter = AsyncSubmitter(
                receiver.enqueuer, receiver.settings.receiver_redis_timeout_seconds
            )
        return self._async_submitter

    def _request(
        self, source: Source, environ: dict[str, Any]
    ) -> tuple[
        Source, Receiver, Request, Callable[[Batch], Answer], Callable[[ReceiverError], Answer]
    ]:
        """`respond`'s arguments for one request to `source` (without the status reader)."""
        req = self.app.request_class(environ)
        req.max_content_length = self.app.config.get("MAX_CONTENT_LENGTH")
        accepted: Callable[[Batch], Answer]
        refused: Callable[[ReceiverError], Answer]
        if source.accepted is accepted_json:
            accepted = self._accepted_json
        else:
            accepted = _rendered(source.accepted, environ)
        if source.refused is json_error:
            refused = self._refused_json
        else:
            refused = _rendered(source.refused, environ)
        return source, self.app.extensions[EXTENSION], req, accepted, refused

    def _accepted_json(self, batch: Batch) -> Answer:
        summary = batch.summary()
        key = (summary["accepted"], summary["dead_lettered"], summary["ignored"])
        answer = self._accepted.get(key)
        if answer is None:
            answer = self._json(200, {"status": "accepted", **summary})
            if len(self._accepted) < 256:  # the common answers, rendered once
                self._accepted[key] = answer
        status, headers, body = answer
        return status, list(headers), body

    def _refused_json(self, err: ReceiverError) -> Answer:
        status, headers, body = self._json(err.status, err.body())
        if err.retry_after is not None:
            headers.append(("Retry-After", str(err.retry_after)))
        return status, headers, body

    def _json(self, status: int, payload: dict[str, Any]) -> Answer:
        """As `jsonify(payload)` with DefaultJSONProvider.response's settings."""
        provider = self.app.json
        compact = getattr(provider, "compact", None)
        if (compact is None and self.app.debug) or compact is False:
            text = provider.dumps(payload, indent=2)
        else:
            text = provider.dumps(payload, separators=(",", ":"))
        body = f"{text}\n".encode()
        mimetype = getattr(provider, "mimetype", "application/json")
        return status, [("Content-Type", mimetype), ("Content-Length", str(len(body)))], body


def _status(answer: Answer) -> int:
    return answer[0]


def _rendered(
    render: Callable[[Any], Response], environ: dict[str, Any]
) -> Callable[[Any], Answer]:
    """A source's own Response-building answer, as (status, headers, body)."""

    def answer(value: Any) -> Answer:
        response = render(value)
        app_iter, _status_line, headers = response.get_wsgi_response(environ)
        return response.status_code, list(headers), b"".join(app_iter)

    return answer
