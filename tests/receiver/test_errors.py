"""The one JSON error contract: 403/404/405/413/415 and the never-a-500 catch-all."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from tests.receiver.conftest import close_app
from tests.receiver.senders import (
    dumps,
    hubspot_event,
    hubspot_v3_headers,
    ingest_batches,
    make_settings,
)
from webhook_app import create_app
from webhook_app.sources import hubspot


def test_wrong_method_is_405_json_with_allow(client: FlaskClient) -> None:
    """GET on a webhook endpoint is a 405 JSON error that keeps the Allow header."""
    response = client.get("/webhooks/hubspot")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    """An unknown path is a 404 in the same JSON shape."""
    response = client.post("/webhooks/pipedrive", data=b"{}")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/webhooks/hubspot", "text/plain"),
        ("/webhooks/hubspot", ""),
        ("/webhooks/generic", "application/x-www-form-urlencoded"),
    ],
)
def test_wrong_content_type_is_415(client: FlaskClient, path: str, content_type: str) -> None:
    """A body that is not declared JSON is refused with 415 before anything is read."""
    response = client.post(path, data=b"[]", headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"


def test_body_over_the_limit_is_413_from_content_length(client: FlaskClient) -> None:
    """A Content-Length above MAX_BODY_BYTES is refused with 413 without reading the body."""
    consumed: list[object] = []

    class Stream(io.BytesIO):
        def read(self, *args: object) -> bytes:  # type: ignore[override]
            consumed.append(args)
            return super().read(*args)  # type: ignore[arg-type]

        def readline(self, *args: object) -> bytes:  # type: ignore[override]
            consumed.append(args)
            return super().readline(*args)  # type: ignore[arg-type]

    response = client.post(
        "/webhooks/hubspot",
        input_stream=Stream(b"[]"),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(1_048_577)},
    )
    assert response.status_code == 413
    assert response.json["error"] == {
        "code": "payload_too_large",
        "message": "request body is larger than 1048576 bytes",
    }
    assert consumed == []


@pytest.fixture
def live_server(app: Flask) -> Iterator[int]:
    """The app on a loopback port (to send a chunked body with no Content-Length)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def send_chunked(port: int, chunks: list[bytes], headers: dict[str, str]) -> bytes:
    """POST /webhooks/hubspot with Transfer-Encoding: chunked; returns the raw answer."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/hubspot HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + head.encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # the server may answer and close early
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < _expected_length(answer):
            data = sock.recv(65_536)
            if not data:
                break
            answer += data
        return answer


def _expected_length(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(answer) + 1


def test_chunked_body_over_the_limit_is_413_while_reading(live_server: int) -> None:
    """Without a Content-Length the limit is enforced while reading (not silently truncated)."""
    chunks = [b"[" + b" " * 65_536] * 20  # 1.3 MB
    answer = send_chunked(live_server, chunks, {"Content-Type": "application/json"})
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"payload_too_large"' in answer


def test_chunked_body_under_the_limit_is_read_whole(
    live_server: int, redis_client: redis.Redis
) -> None:
    """A signed chunked batch is read completely and accepted."""
    body = dumps([hubspot_event(eventId=i) for i in range(50)])
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    answer = send_chunked(live_server, chunks, hubspot_v3_headers(body))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert len(ingest_batches(redis_client)[0]) == 50


def test_unconfigured_sources_are_403(redis_url: str) -> None:
    """A source without its secret / allow-list refuses with 403 and a clear code."""
    app = create_app(
        make_settings(
            redis_url, HUBSPOT_CLIENT_SECRET="", SALESFORCE_ORG_IDS="", GENERIC_WEBHOOK_SECRET=""
        )
    )
    try:
        client = app.test_client()
        for path, code in [
            ("/webhooks/hubspot", "hubspot_not_configured"),
            ("/webhooks/generic", "generic_not_configured"),
        ]:
            response = client.post(path, data=b"[]", content_type="application/json")
            assert (response.status_code, response.json["error"]["code"]) == (403, code)
        response = client.post("/webhooks/salesforce", data=b"<x/>", content_type="text/xml")
        assert response.status_code == 403
        assert b"salesforce_not_configured" in response.data
        assert b"<faultcode>soapenv:Client</faultcode>" in response.data
    finally:
        close_app(app)


def test_unexpected_error_is_503_not_500(
    client: FlaskClient, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a parser is answered 503 internal_error with Retry-After, never a 500."""

    def explode(*args: object) -> object:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(
        hubspot,
        "SOURCE",
        hubspot.SOURCE.__class__(
            **{
                **{f: getattr(hubspot.SOURCE, f) for f in hubspot.SOURCE.__dataclass_fields__},
                "parse": explode,
            }
        ),
    )
    body = dumps([hubspot_event()])
    response = client.post("/webhooks/hubspot", data=body, headers=hubspot_v3_headers(body))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json["error"]["code"] == "internal_error"
    assert "boom" not in response.get_data(as_text=True)


def test_bad_generic_secret_stops_start_up(redis_url: str) -> None:
    """A GENERIC_WEBHOOK_SECRET that is not base64 stops create_app with one clear line."""
    from worker.settings import SettingsError

    with pytest.raises(SettingsError, match=r"^GENERIC_WEBHOOK_SECRET: ") as err:
        create_app(make_settings(redis_url, GENERIC_WEBHOOK_SECRET="whsec_ok== whsec_%%%"))
    assert "%%%" not in str(err.value)
