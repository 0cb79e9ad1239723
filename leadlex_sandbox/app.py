"""The WSGI app: the API under /functions/v1/api-gateway, control endpoints under /_sandbox/.

`create_app(state)` builds a fresh Flask app per sandbox. The API route is a
catch-all handed to the Gateway so that unknown paths and wrong methods still go
through auth, limits and the headers, like a real gateway. A dropped answer
(`drop_after_apply_rate`) is done by `DropConnection`: the socket is shut down
and nothing is written, so the client sees the connection close with no
response (httpx: RemoteProtocolError or ReadError). That needs werkzeug's server,
which exposes the socket as `environ["werkzeug.socket"]`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from leadlex_sandbox.control import control_blueprint
from leadlex_sandbox.gateway import API_PREFIX, ApiRequest, Gateway
from leadlex_sandbox.state import SandboxState

DROP_KEY = "leadlex_sandbox.drop"
API_METHODS = ["GET", "POST", "PATCH", "PUT", "DELETE"]


class DropConnection:
    """WSGI middleware: when the app marked the request, close the socket unanswered."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        answer = self.app(environ, start_response)
        if not environ.get(DROP_KEY):
            return answer
        if hasattr(answer, "close"):
            answer.close()
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        # werkzeug treats ConnectionError as "client went away" and writes nothing.
        raise ConnectionAbortedError("leadlex_sandbox dropped the answer after applying the write")


def create_app(state: SandboxState) -> Flask:
    """A Flask app serving the simulated LeadLex API and the control endpoints."""
    # An explicit root path: editable installs import through a hook Flask cannot ask.
    app = Flask("leadlex_sandbox", root_path=os.path.dirname(os.path.abspath(__file__)))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    gateway = Gateway(state)

    def api(rest: str) -> Response:
        arrival = time.time()
        answer = gateway.handle(
            ApiRequest(
                method=request.method,
                path="/" + rest if rest else "/",
                query=request.args.to_dict(flat=True),
                query_string=request.query_string.decode("latin-1"),
                authorization=request.headers.get("Authorization"),
                idempotency_key=request.headers.get("Idempotency-Key"),
                content_type=request.mimetype or None,
                raw_body=request.get_data(cache=False),
                arrival=arrival,
            )
        )
        if answer.drop:
            request.environ[DROP_KEY] = True
        return Response(
            answer.raw if answer.raw is not None else json.dumps(answer.body),
            status=answer.status,
            headers=answer.headers,
            content_type=answer.mimetype,
        )

    app.add_url_rule(
        API_PREFIX,
        "api_root",
        api,
        methods=API_METHODS,
        defaults={"rest": ""},
        provide_automatic_options=False,
    )
    app.add_url_rule(
        f"{API_PREFIX}/<path:rest>",
        "api",
        api,
        methods=API_METHODS,
        provide_automatic_options=False,
    )
    app.register_blueprint(control_blueprint(state))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        body = {"error": {"code": code, "message": error.description or error.name}}
        return Response(json.dumps(body), status=error.code or 500, mimetype="application/json")

    app.wsgi_app = DropConnection(app.wsgi_app)  # type: ignore[method-assign]
    return app
