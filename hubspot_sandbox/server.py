"""Serving the simulator: `HubSpotSandboxServer` (background thread, tests and dev mode)."""

from __future__ import annotations

import threading
from types import TracebackType

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from hubspot_sandbox.app import create_app
from hubspot_sandbox.config import HubSpotSandboxConfig
from hubspot_sandbox.state import HubSpotSandboxState


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class HubSpotSandboxServer:
    """A simulated HubSpot on a loopback port, served from a daemon thread.

    With `push_interval` set, a second thread delivers due webhooks every that many
    (real) seconds, as HubSpot would; tests leave it off and move the clock instead."""

    def __init__(
        self,
        config: HubSpotSandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        push_interval: float | None = None,
        quiet: bool = True,
    ) -> None:
        self.state = HubSpotSandboxState(config or HubSpotSandboxConfig())
        self.host = host
        self._port = port
        self._quiet = quiet
        self._push_interval = push_interval
        self._server: BaseWSGIServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        return self._server.server_port if self._server is not None else self._port

    @property
    def url(self) -> str:
        """HUBSPOT_API_BASE_URL for clients (control endpoints under /_hubspot/)."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> HubSpotSandboxServer:
        if self._server is not None:
            return self
        handler = _QuietHandler if self._quiet else WSGIRequestHandler
        self._server = make_server(
            self.host, self._port, create_app(self.state), threaded=True, request_handler=handler
        )
        self._stop.clear()
        serve = threading.Thread(target=self._server.serve_forever, daemon=True)
        serve.start()
        self._threads = [serve]
        if self._push_interval:
            push = threading.Thread(target=self._push_loop, daemon=True)
            push.start()
            self._threads.append(push)
        return self

    def _push_loop(self) -> None:
        assert self._push_interval is not None
        while not self._stop.wait(self._push_interval):
            self.state.deliver_due()

    def stop(self) -> None:
        if self._server is None:
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = None
        self._threads = []

    def __enter__(self) -> HubSpotSandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
