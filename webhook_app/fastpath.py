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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.http import HTTP_STATUS_CODES

from webhook_app.errors import ReceiverError, json_error
from webhook_app.intake import EXTENSION, HasSource, accepted_json, respond
from worker.batch import Batch

# (status, WSGI headers, body)
Answer = tuple[int, list[tuple[str, str]], bytes]
WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class WebhookFastPath:
    """WSGI middleware: the sources' POST routes answered directly, the rest by Flask."""

    def __init__(self, app: Flask, modules: Iterable[HasSource]) -> None:
        self.app = app
        self.flask_wsgi: WSGIApp = app.wsgi_app
        # path -> source module; its SOURCE is read at each request, as the views read it.
        self.routes = {module.SOURCE.path: module for module in modules if module.SOURCE.path}

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
        source = module.SOURCE
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
        status, headers, body = respond(
            source, self.app.extensions[EXTENSION], req, accepted, refused, _status
        )
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}", headers)
        return [body]

    def _accepted_json(self, batch: Batch) -> Answer:
        return self._json(200, {"status": "accepted", **batch.summary()})

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
