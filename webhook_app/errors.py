"""One error contract for every answer that is not a success, mirroring LeadLex's.

    {"error": {"code": "signature_mismatch", "message": "...", "details": {...}}}

`details` is present only when there is something to add (e.g. `{"field": "..."}`).
Statuses: 400 malformed (the message names the field), 401 signature / token /
timestamp, 403 unknown account or source not configured, 404, 405, 413 body too
large, 415 wrong content type, 503 (+ `Retry-After`) when the broker cannot take the
events or anything unexpected happens, so the CRM retries and nothing is lost.
Bad input never yields a 500. Messages never contain a secret, a signature or a body.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("leadlex_sync.receiver")

RETRY_AFTER_SECONDS = 30

# Werkzeug's own HTTP errors (routing, body limit) under our codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ReceiverError(Exception):
    """A request the receiver refuses: HTTP status, stable code, human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        """The JSON error object."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def unavailable(code: str, message: str) -> ReceiverError:
    """A 503 the CRM should retry after RETRY_AFTER_SECONDS."""
    return ReceiverError(503, code, message, retry_after=RETRY_AFTER_SECONDS)


def json_error(err: ReceiverError) -> Response:
    """Render `err` as the JSON error contract."""
    response = jsonify(err.body())
    response.status_code = err.status
    if err.retry_after is not None:
        response.headers["Retry-After"] = str(err.retry_after)
    return response


def from_http_exception(exc: HTTPException, max_body_bytes: int | None = None) -> ReceiverError:
    """Werkzeug's HTTP errors in our contract (a 5xx becomes a retryable 503)."""
    status = exc.code or 500
    if status >= 500:
        return unavailable("internal_error", "the receiver could not handle the request; retry")
    if status == 413 and max_body_bytes:
        message = f"request body is larger than {max_body_bytes} bytes"
    else:
        message = (exc.description or exc.name).strip()
    return ReceiverError(status, _HTTP_CODES.get(status, "http_error"), message)


def register_error_handlers(app: Flask) -> None:
    """JSON for every error Flask itself raises, and never a 500 or a stack trace."""

    @app.errorhandler(ReceiverError)
    def _receiver_error(exc: ReceiverError) -> Response:
        return json_error(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = json_error(from_http_exception(exc, app.config.get("MAX_CONTENT_LENGTH")))
        allow = exc.get_response().headers.get("Allow")
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in the receiver (answered 503)")
        return json_error(
            unavailable("internal_error", "the receiver could not handle the request; retry")
        )
