"""Where a one-event webhook request's CPU goes, in-process (issue 14).

    .venv/bin/python bench/receiver_parts.py [--requests 3000]

Builds the receiver with `create_app` on a private redis-server (no AOF) and calls its WSGI
entry the way webhook_app.serving's threads do, with signed one-event HubSpot requests, in
one thread (no gunicorn, no HTTP, no load generator). Prints one JSON object of CPU µs per
request (user + system, best of 3 rounds) for the whole request and for its parts:

- request: the whole WSGI call (what a server thread runs);
- request_without_redis: the same with Enqueuer.submit replaced by a no-op;
- submit: Enqueuer.submit alone (events -> inbox + broker message + counters in Redis);
- verify_signature, parse_batch, task_envelope, event_to_dict: single steps;
- log_line_json_info: one canonical receiver log line at INFO in the JSON format (the shipped
  gunicorn config's; the bench runs without it, so its requests log nothing);
- redis_ping: one redis-py round trip, for scale.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-client-secret-0000"


def cpu_us(fn: Callable[[], Any], n: int, rounds: int = 3) -> float:
    """Best-of-`rounds` CPU µs per call of `fn` over `n` calls (after a short warm-up)."""
    for _ in range(min(200, n)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return round(best, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="calls per measurement")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from worker.embedded_redis import RedisServer

    server = RedisServer(appendonly=False).start()
    try:
        print(json.dumps(_measure(server.url, args.requests), indent=2))
    finally:
        server.cleanup()
    return 0


def _measure(redis_url: str, n: int) -> dict[str, Any]:
    from bench.receiver import hubspot_requests
    from webhook_app import create_app
    from webhook_app.intake import EXTENSION
    from webhook_app.serving import BufferedWSGI, _environ
    from webhook_app.sources.hubspot import SOURCE
    from worker.broker_wire import task_envelope
    from worker.celery_app import app as celery_app
    from worker.logs import configure_logging
    from worker.settings import load_settings

    port = 8000
    env = {
        "REDIS_URL": redis_url,
        "HUBSPOT_CLIENT_SECRET": SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    app = create_app(load_settings(env, require_leadlex=False, env_file=None))
    receiver = app.extensions[EXTENSION]
    server = BufferedWSGI(app, threads=1)
    scopes = [_scope(raw) for raw in hubspot_requests(port, 1, 200)]
    counter = [0]

    def environ() -> dict[str, Any]:
        counter[0] += 1
        scope, body = scopes[counter[0] % len(scopes)]
        return _environ(scope, body, False)

    def request() -> None:
        status, _headers, _chunks = server._run_wsgi(environ())
        assert status == 200, status

    out: dict[str, Any] = {"requests_per_measurement": n}
    out["request"] = cpu_us(request, n)
    req = app.request_class(environ())
    body = req.get_data()
    out["verify_signature"] = cpu_us(lambda: SOURCE.authenticate(receiver, req, body), n)
    out["parse_batch"] = cpu_us(lambda: SOURCE.parse(receiver, req, body, 1_760_000_000_000), n)
    batch = SOURCE.parse(receiver, req, body, 1_760_000_000_000)
    out["event_to_dict"] = cpu_us(lambda: [e.to_dict() for e in batch.events], n)
    out["task_envelope"] = cpu_us(
        lambda: task_envelope(
            celery_app, "leadlex_sync.ingest_batch", [["0" * 32]], queue="q", argsrepr="x"
        ),
        n,
    )
    out["submit"] = cpu_us(lambda: receiver.enqueuer.submit("hubspot", batch), n)
    out["redis_ping"] = cpu_us(receiver.redis.ping, n)
    submit = receiver.enqueuer.submit
    object.__setattr__(receiver.enqueuer, "submit", lambda source, batch: None)
    try:
        out["request_without_redis"] = cpu_us(request, n)
    finally:
        object.__setattr__(receiver.enqueuer, "submit", submit)
    handler = configure_logging("json", logging.INFO, service="web", stream=io.StringIO())
    log = logging.getLogger("leadlex_sync.receiver")

    def log_line() -> None:
        log.info(
            "webhook %s %s %s",
            "hubspot",
            200,
            "accepted",
            extra={"source": "hubspot", "account": "7070707", "accepted": 1, "status": 200},
        )
        handler.stream.seek(0)  # type: ignore[attr-defined]
        handler.stream.truncate()  # type: ignore[attr-defined]

    out["log_line_json_info"] = cpu_us(log_line, n)
    receiver.redis.close()
    return out


def _scope(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """An ASGI HTTP scope and body for one raw HTTP/1.1 request."""
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    method, path, _version = lines[0].split(b" ")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    scope = {
        "type": "http",
        "method": method.decode(),
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "http_version": "1.1",
    }
    return scope, body


if __name__ == "__main__":
    raise SystemExit(main())
