"""Serving the sandbox: `SandboxServer` (background thread, for tests and dev mode) and `serve`.

Both use werkzeug's threaded server, so concurrent clients are served in
parallel (the sandbox lock serialises the decisions) and dropped answers work.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from leadlex_sandbox.app import create_app
from leadlex_sandbox.config import SandboxConfig
from leadlex_sandbox.demo import demo_contacts
from leadlex_sandbox.gateway import API_PREFIX
from leadlex_sandbox.state import SandboxState
from leadlex_sandbox.store import ContactStore


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (tests make thousands)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return


class SandboxServer:
    """A LeadLex simulator on a loopback port, served from a background thread."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        quiet: bool = True,
    ) -> None:
        self.state = SandboxState(config)
        self.host = host
        self._port = port
        self._quiet = quiet
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> SandboxConfig:
        """The config in force now (control endpoints may have changed it)."""
        return self.state.config

    @property
    def store(self) -> ContactStore:
        """The contact store (same-process tests only; hold `state.lock` when mutating)."""
        return self.state.store

    @property
    def port(self) -> int:
        """The bound port (the real one once started with port=0)."""
        return self._server.server_port if self._server is not None else self._port

    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:8787 (control endpoints live under /_sandbox/)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """LEADLEX_BASE_URL for clients: root URL + /functions/v1/api-gateway."""
        return self.url + API_PREFIX

    @property
    def api_key(self) -> str:
        """A configured key with write permission (the first one), for convenience."""
        keys = self.state.config.api_keys
        return next((k for k, p in keys.items() if "write" in p), next(iter(keys), ""))

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="leadlex-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def run(self, on_ready: Callable[[SandboxServer], None] | None = None) -> None:
        """Bind and serve in this thread until Ctrl-C; `on_ready` runs once bound."""
        self._server = server = self._bind()
        try:
            if on_ready is not None:
                on_ready(self)
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            self._server = None

    def _bind(self) -> BaseWSGIServer:
        handler = _QuietHandler if self._quiet else WSGIRequestHandler
        return make_server(
            self.host, self._port, create_app(self.state), threaded=True, request_handler=handler
        )

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def seed(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert contacts directly (same process); returns their full views."""
        with self.state.lock:
            return [self.state.store.seed(r).full_view() for r in records]

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8787,
    config: SandboxConfig | None = None,
    *,
    seed_demo: bool = False,
) -> None:
    """Serve the sandbox in the foreground until interrupted (Ctrl-C)."""
    server = SandboxServer(config, host, port, quiet=False)
    seeded = server.seed(demo_contacts()) if seed_demo else []

    def announce(ready: SandboxServer) -> None:
        print(f"LeadLex sandbox: LEADLEX_BASE_URL={ready.base_url}", file=sys.stderr, flush=True)
        print(f"control endpoints: {ready.url}/_sandbox/", file=sys.stderr, flush=True)
        for contact in seeded:
            line = f"  demo contact {contact['id']}  {contact['full_name']}"
            print(line, file=sys.stderr, flush=True)

    server.run(announce)
