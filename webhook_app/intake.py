"""The request path every source shares: refuse early, verify, parse, enqueue, answer, log.

A source is data (`Source`): its name, the media types it accepts and four functions
(is it configured, authenticate, parse, answer). `receive(source)` runs them in order:

    configured (403) -> media type (415) -> Content-Length (413, before reading)
    -> read body (413 while reading) -> authenticate (401) -> parse (400/403)
    -> enqueue (503) -> answer (2xx)

and writes one canonical log line per request on `leadlex_sync.receiver` with the extra
fields source, account, accepted, dead_lettered, ignored, latency_ms, outcome, status.
Nothing secret, no signature and no body is ever logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis
from flask import Request, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from webhook_app.errors import ReceiverError, from_http_exception, json_error, unavailable
from worker.batch import Batch
from worker.handoff import Enqueuer, EnqueueUnavailable
from worker.settings import Settings

log = logging.getLogger("leadlex_sync.receiver")

EXTENSION = "leadlex_sync"


@dataclass(frozen=True, slots=True)
class Receiver:
    """What a request handler needs, built once by create_app (app.extensions[EXTENSION])."""

    settings: Settings
    redis: redis.Redis
    enqueuer: Enqueuer
    clock: Callable[[], float]  # epoch seconds (time.time); tests pin it
    generic_keys: tuple[bytes, ...]  # decoded GENERIC_WEBHOOK_SECRET keys, newest first


def current_receiver() -> Receiver:
    receiver: Receiver = current_app.extensions[EXTENSION]
    return receiver


@dataclass(frozen=True, slots=True)
class Source:
    """One sender, as data: how to check, read and answer its requests."""

    name: str
    media_types: frozenset[str]
    # Raise ReceiverError (403) when the source is not configured (no secret / allow-list).
    configured: Callable[[Settings], None]
    # Raise ReceiverError (401) unless the request is genuine.
    authenticate: Callable[[Receiver, Request, bytes], None]
    # Turn the body into events, rejects and ignored counts; ReceiverError for a bad request.
    parse: Callable[[Receiver, Request, bytes, int], Batch]
    # The success answer, and the error answer (JSON by default).
    accepted: Callable[[Batch], Response]
    refused: Callable[[ReceiverError], Response] = json_error
    # The route (`POST path`), for the blueprint and the WSGI fast path (webhook_app.fastpath).
    path: str = ""


class HasSource(Protocol):
    """A source module: its `Source` as the module-level name SOURCE."""

    SOURCE: Source


def parse_json_body(body: bytes) -> Any:
    """Decode a JSON body, refusing NaN/Infinity; ReceiverError 400 if it is not JSON."""

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        raise ReceiverError(
            400, "malformed_json", "body is not valid UTF-8 JSON", {"field": "$"}
        ) from None


def accepted_json(batch: Batch) -> Response:
    """`200 {"status": "accepted", "accepted": n, "dead_lettered": n, "ignored": n}`."""
    return jsonify({"status": "accepted", **batch.summary()})


# The environ key under which a server that has read the whole body already (de-chunked,
# at most the limit + 1 bytes: webhook_app.serving.BufferedWSGI) passes it as bytes.
BODY_KEY = "leadlex_sync.body"


def _read_body(receiver: Receiver, req: Request) -> bytes:
    limit = receiver.settings.max_body_bytes
    if req.content_length is not None and req.content_length > limit:
        raise _too_large(limit)  # from the header alone: the body is never read
    read: bytes | None = req.environ.get(BODY_KEY)
    if read is not None:
        if len(read) > limit:
            raise _too_large(limit)
        return read
    if req.content_length is None and req.environ.get("wsgi.input_terminated"):
        # Chunked upload: read at most limit + 1 bytes ourselves. (Werkzeug's limited
        # stream stops silently at MAX_CONTENT_LENGTH, which would truncate the body.)
        return _read_terminated(req.environ["wsgi.input"], limit)
    try:
        return req.get_data(cache=True)
    except HTTPException as exc:
        raise from_http_exception(exc, limit) from None


def _too_large(limit: int) -> ReceiverError:
    return ReceiverError(413, "payload_too_large", f"request body is larger than {limit} bytes")


def _read_terminated(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            data = stream.read(min(65_536, limit + 1 - total))
        except Exception:  # noqa: BLE001 - OSError, or the server's parse error (bad chunk)
            # gunicorn raises its own ParseException subclasses (InvalidChunkSize, ...),
            # which are neither OSError nor ValueError: the body is malformed, a 400.
            raise ReceiverError(
                400, "body_incomplete", "the request body was cut short or badly chunked"
            ) from None
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        total += len(data)
        if total > limit:
            raise _too_large(limit)


def _check_and_parse(source: Source, receiver: Receiver, req: Request) -> Batch:
    source.configured(receiver.settings)
    if req.mimetype not in source.media_types:
        raise ReceiverError(
            415,
            "unsupported_media_type",
            f"Content-Type must be {' or '.join(sorted(source.media_types))}",
        )
    body = _read_body(receiver, req)
    source.authenticate(receiver, req, body)
    received_ms = int(receiver.clock() * 1000)
    return source.parse(receiver, req, body, received_ms)


def receive(source: Source) -> Response:
    """Run one webhook request through `source` (a Flask view); always answers, never raises."""
    return respond(source, current_receiver(), request, source.accepted, source.refused, _status)


def _status(response: Response) -> int:
    return response.status_code


Answer = TypeVar("Answer")

# The Redis work a request asks of its driver: `(SUBMIT, source name, batch)` (the
# Enqueuer's `submit`; EnqueueUnavailable is thrown back in) and `(COUNT_REFUSAL, source
# name, outcome)` (`count_refusal`, best effort).
SUBMIT = "submit"
COUNT_REFUSAL = "count_refusal"
Step = tuple[str, str, Any]


def respond_steps(
    source: Source,
    receiver: Receiver,
    req: Request,
    accepted: Callable[[Batch], Answer],
    refused: Callable[[ReceiverError], Answer],
    status_of: Callable[[Answer], int],
) -> Generator[Step, None, Answer]:
    """One request through `source`: checks, parsing, answer, counters and the log line,
    with the Redis work yielded as steps for the caller to run; returns the answer.

    The one request path for every way in: `respond` runs the steps as blocking calls
    (the Flask views, the WSGI fast path), webhook_app.fastpath's `respond_async` awaits
    them on the event loop; so all answer alike. Never raises."""
    started = time.perf_counter()
    batch: Batch | None = None
    try:
        batch = _check_and_parse(source, receiver, req)
        try:
            yield (SUBMIT, source.name, batch)
        except EnqueueUnavailable as exc:
            log.warning("%s: cannot enqueue (%s); answering 503", source.name, exc)
            raise unavailable(
                "broker_unavailable", "the events could not be queued; retry later"
            ) from None
        response = accepted(batch)
        outcome = "accepted"
    except ReceiverError as err:
        response, outcome = refused(err), err.code
    except Exception:  # the last line of defence: never a 500, always a retry
        log.exception("%s: unexpected error (answered 503)", source.name)
        internal = unavailable("internal_error", "the receiver could not handle the request; retry")
        response, outcome = refused(internal), internal.code
    if outcome != "accepted":
        yield (COUNT_REFUSAL, source.name, outcome)
    if log.isEnabledFor(logging.INFO):
        counts = batch.summary() if batch else {"accepted": 0, "dead_lettered": 0, "ignored": 0}
        status = status_of(response)
        log.info(
            "webhook %s %s %s",
            source.name,
            status,
            outcome,
            extra={
                "source": source.name,
                "account": batch.account if batch else "",
                **counts,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "outcome": outcome,
                "status": status,
            },
        )
    return response


def respond(
    source: Source,
    receiver: Receiver,
    req: Request,
    accepted: Callable[[Batch], Answer],
    refused: Callable[[ReceiverError], Answer],
    status_of: Callable[[Answer], int],
) -> Answer:
    """Run one request through `source` and answer with `accepted` / `refused`; never raises.

    `respond_steps` with its Redis steps run as blocking calls of the receiver's Enqueuer
    (the Flask views with Flask responses, the WSGI fast path with status/headers/body)."""
    steps = respond_steps(source, receiver, req, accepted, refused, status_of)
    enqueuer = receiver.enqueuer
    error: Exception | None = None
    while True:
        try:
            action, name, value = steps.send(None) if error is None else steps.throw(error)
        except StopIteration as stop:
            answer: Answer = stop.value
            return answer
        error = None
        try:
            if action == SUBMIT:
                enqueuer.submit(name, value)
            else:
                enqueuer.count_refusal(name, value)
        except Exception as exc:  # noqa: BLE001 - handed back to the steps, which answer
            error = exc
