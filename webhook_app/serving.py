"""The shipped web server: requests are read whole on an event loop, then run on threads.

gunicorn's `gthread` worker hands a connection to one of its threads as soon as the first
bytes arrive, and that thread then blocks until the client has sent the whole request:
eight clients trickling headers or a body (2 workers x 4 threads) stopped every webhook
(issue 11). `BufferingWorker` is gunicorn's asyncio worker (`gunicorn.workers.gasgi`) in
front of the unchanged WSGI app:

- the event loop reads every request, headers and body, at no thread's cost; a client
  that has not sent its whole request REQUEST_READ_SECONDS after connecting (or after its
  headers, for the body) is answered 408 and closed, so slow clients cost a socket each,
  never a thread (`worker_connections` bounds the sockets per worker);
- a body larger than MAX_BODY_BYTES is not buffered: a declared Content-Length over the
  limit reaches the app with no body (it answers 413 from the header), a chunked body is
  cut at limit + 1 bytes (the app answers 413);
- only a complete request is handed to the WSGI app, on a pool of `threads` threads per
  worker: the app's Redis and Celery calls stay plain blocking calls;
- except the webhook POSTs when the app offers a `LoopHandler` (webhook_app.fastpath,
  RECEIVER_ASYNC_HANDOFF): verified and parsed on the loop, handed to Redis with one
  awaited command; what it cannot await it runs on the same threads; a body over
  DEFAULT_LOOP_BODY_BYTES (64 KiB) goes to the threads, so its parse never stalls the loop;
- errors the HTTP parser answers itself (bad chunk size, malformed request line, ...)
  use the receiver's JSON error envelope, without quoting the request.

Use it with `gunicorn -c deploy/gunicorn.conf.py "webhook_app:create_app()"` (the
Procfile's line); `gunicorn "webhook_app:create_app()"` without the config file still
works (gunicorn's default worker, without these guarantees).
"""

from __future__ import annotations

import asyncio
import json
import select
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from io import BytesIO
from typing import Any, Protocol, runtime_checkable

from gunicorn.asgi import protocol as gunicorn_protocol
from gunicorn.workers import gasgi

from webhook_app.intake import BODY_KEY, EXTENSION

DEFAULT_READ_SECONDS = 10.0
DEFAULT_MAX_BODY_BYTES = 1_048_576
# Webhook POSTs with a larger body are answered on the threads, not on the event loop: a
# 1 MiB JSON parse (tens of ms) would stall every other connection of the worker.
DEFAULT_LOOP_BODY_BYTES = 65_536
# With several workers, one that has just accepted a connection while more wait leaves
# the listening socket to the others this long (BalancedAcceptLoop).
ACCEPT_PAUSE_SECONDS = 0.0005

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

# Statuses gunicorn's parser answers itself -> our error codes.
_PARSER_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "headers_too_large",
    501: "not_implemented",
}


@runtime_checkable
class LoopHandler(Protocol):
    """Requests answered on the event loop, found as the WSGI app's `wsgi_app` attribute
    (webhook_app.fastpath.WebhookFastPath: the webhook POSTs, RECEIVER_ASYNC_HANDOFF)."""

    def async_ready(self) -> bool: ...

    def takes_async(self, method: str, path: str) -> bool: ...

    def respond_async(
        self, environ: dict[str, Any], in_thread: Callable[..., Awaitable[Any]]
    ) -> Awaitable[tuple[int, list[tuple[str, str]], bytes]]: ...


def error_body(status: int, code: str, message: str) -> bytes:
    """The receiver's error envelope (webhook_app.errors), as bytes."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _environ(scope: Scope, body: bytes, chunked: bool) -> dict[str, Any]:
    """A PEP 3333 environ for an ASGI HTTP scope whose body is already read."""
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": BytesIO(body),
        BODY_KEY: body,  # the same bytes, for the receiver's checks (no stream to wrap)
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if chunked:
        environ["wsgi.input_terminated"] = True
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        if name == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif name == "CONTENT_LENGTH":
            environ["CONTENT_LENGTH"] = value
        elif name == "TRANSFER_ENCODING":
            environ["HTTP_TRANSFER_ENCODING"] = value
        else:
            key = f"HTTP_{name}"
            environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class BufferedWSGI:
    """An ASGI app that reads each request whole (bounded in time and size), then runs
    the WSGI app on a thread pool."""

    def __init__(
        self,
        wsgi_app: Callable[..., Iterable[bytes]],
        *,
        threads: int,
        read_seconds: float = DEFAULT_READ_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        fast: LoopHandler | None = None,
        loop_body_bytes: int = DEFAULT_LOOP_BODY_BYTES,
    ) -> None:
        self.wsgi_app = wsgi_app
        # The webhook POSTs' handler on the loop (RECEIVER_ASYNC_HANDOFF), or None.
        self.fast = fast
        # Only bodies up to this size are verified and parsed on the loop.
        self.loop_body_bytes = loop_body_bytes
        self.threads = max(1, threads)
        self.read_seconds = read_seconds
        self.max_body_bytes = max_body_bytes
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        # Built on first use, i.e. in the worker process (after gunicorn's fork).
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="wsgi")
        return self._executor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served
        declared = _content_length(scope)
        chunked = declared is None and _is_chunked(scope)
        if declared is not None and declared > self.max_body_bytes:
            body = b""  # the app refuses from the header (413); the body is never read
        else:
            try:
                async with asyncio.timeout(self.read_seconds):
                    body, complete = await self._read_body(receive)
            except TimeoutError:
                await _answer(
                    send,
                    408,
                    error_body(
                        408,
                        "request_timeout",
                        f"the request body did not arrive within {self.read_seconds:g} s",
                    ),
                )
                return
            if not complete:
                # The client went away mid-body (or its framing was bad and the parser has
                # answered already): record a 400, never the server's default 500.
                await _answer(
                    send,
                    400,
                    error_body(400, "body_incomplete", "the request body was cut short"),
                )
                return
        environ = _environ(scope, body, chunked)
        if (
            self.fast is not None
            and len(body) <= self.loop_body_bytes
            and self.fast.takes_async(scope["method"], scope["path"])
        ):
            # Verified and parsed here, handed off with one awaited Redis command.
            status, wsgi_headers, answer = await self.fast.respond_async(environ, self._in_thread)
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in wsgi_headers]
            chunks = [answer]
        else:
            loop = asyncio.get_running_loop()
            status, headers, chunks = await loop.run_in_executor(
                self.executor, self._run_wsgi, environ
            )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    async def _in_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """(body, complete): at most max_body_bytes + 1 bytes, complete False on disconnect."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", False
            chunk = message.get("body", b"")
            if chunk and size <= self.max_body_bytes:
                keep = chunk[: self.max_body_bytes + 1 - size]
                parts.append(keep)
                size += len(keep)
            if not message.get("more_body", False):
                return b"".join(parts), True
            if size > self.max_body_bytes:
                return b"".join(parts), True  # enough to refuse it; the rest is not read

    def _run_wsgi(
        self, environ: dict[str, Any]
    ) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
        started: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            started["status"] = int(status.split(" ", 1)[0])
            started["headers"] = [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers
            ]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = self.wsgi_app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return started["status"], started["headers"], chunks

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._executor is not None:
                    self._executor.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _is_chunked(scope: Scope) -> bool:
    raw = _header(scope, b"transfer-encoding") or b""
    return b"chunked" in raw.lower()


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class DeadlineProtocol(gunicorn_protocol.ASGIProtocol):
    """gunicorn's HTTP/1 protocol with a header deadline and the JSON error envelope.

    A connection whose first request's headers are not complete `read_seconds` after it
    opened is answered 408 and closed (later requests on a kept-alive connection are
    bounded by gunicorn's keepalive timer)."""

    read_seconds = DEFAULT_READ_SECONDS

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._header_deadline = asyncio.get_running_loop().call_later(
            self.read_seconds, self._headers_too_slow
        )

    def _on_headers_complete(self) -> Any:
        self._header_deadline.cancel()
        return super()._on_headers_complete()

    def _headers_too_slow(self) -> None:
        if self._current_request is None and not self._closed:
            self._send_error_response(408, "")
            self._close_transport()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline.cancel()
        super().connection_lost(exc)

    def _send_error_response(
        self, status: int, message: str, extra_headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        # gunicorn's message may quote the request (a query string can hold a token):
        # answer with a fixed message instead.
        code = _PARSER_CODES.get(status, "http_error")
        if status == 408:
            text = f"the request did not arrive within {self.read_seconds:g} s"
        else:
            text = "the request is not valid HTTP/1.1 (request line, headers or chunked body)"
        body = error_body(status, code, text)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        extra = "".join(f"{name}: {value}\r\n" for name, value in extra_headers)
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{extra}"
            "Connection: close\r\n\r\n"
        )
        self._safe_write(head.encode("latin-1"))
        self._safe_write(body)


class BalancedAcceptLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, accepting at most `accepts_per_wake` connections per readiness event.

    asyncio accepts up to the server's backlog (100) connections each time the listening
    socket is readable, so when a client opens several connections at once the first
    worker to wake takes them all and the other workers sit idle (one core serves them).
    Taking one and going back to the selector lets every worker's loop, woken by the same
    event, take its turn (nginx's `multi_accept off`). Nothing else changes: the kernel
    backlog, the protocol and the transports are asyncio's own.

    That alone still left a phase on one worker now and then: a worker not scheduled
    while the other takes the whole queue, one per wake, in ~100 µs. So with `accept_pause`
    > 0 (BufferingWorker sets it when there are several workers), a loop that has just
    taken a connection while more are still waiting stops watching the listening socket
    for that long, leaving the queue to the others; with nobody else taking them it takes
    the next one after the pause. A lone connection is never delayed, and a single worker
    never pauses."""

    accepts_per_wake = 1
    accept_pause = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._took_one = False

    def _accept_connection(
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *rest: Any,
        **kwargs: Any,
    ) -> None:
        self._took_one = False
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory,
            sock,
            sslcontext,
            server,
            min(backlog, self.accepts_per_wake),
            *rest,
            **kwargs,
        )
        if self._took_one and self.accept_pause > 0 and _waiting(sock):
            fd = sock.fileno()
            self._remove_reader(fd)  # type: ignore[attr-defined]
            self.call_later(
                self.accept_pause,
                self._resume_accepting,
                fd,
                (protocol_factory, sock, sslcontext, server, backlog, *rest),
                kwargs,
            )

    def _accept_connection2(self, *args: Any, **kwargs: Any) -> Any:
        # asyncio calls this (making the coroutine that sets the connection up) once per
        # connection it accepted.
        self._took_one = True
        return super()._accept_connection2(*args, **kwargs)  # type: ignore[misc]

    def _resume_accepting(self, fd: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sock = args[1]
        if self.is_closed() or sock.fileno() != fd:  # the server closed meanwhile
            return
        self._add_reader(fd, self._accept_connection, *args, **kwargs)  # type: ignore[attr-defined]


def _waiting(sock: Any) -> bool:
    """True when the listening socket has a connection waiting to be accepted."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):  # closed meanwhile
        return False


class BufferingWorker(gasgi.ASGIWorker):
    """gunicorn worker: asyncio reads requests whole; the WSGI app runs on `threads` threads."""

    def _setup_event_loop(self) -> None:
        """asyncio's loop with balanced accepts (BalancedAcceptLoop); not uvloop, whose
        accept loop cannot be bounded (the receiver does not install it)."""
        self.loop = BalancedAcceptLoop()
        if self.cfg.workers > 1:
            self.loop.accept_pause = ACCEPT_PAUSE_SECONDS
        asyncio.set_event_loop(self.loop)

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        """`threads` sizes the WSGI thread pool here (gasgi would warn that it is unused)."""

    def load_wsgi(self) -> None:
        wsgi = self.app.wsgi()
        read_seconds, max_body = DEFAULT_READ_SECONDS, DEFAULT_MAX_BODY_BYTES
        receiver = getattr(wsgi, "extensions", {}).get(EXTENSION)
        if receiver is not None:
            read_seconds = receiver.settings.request_read_seconds
            max_body = receiver.settings.max_body_bytes
        DeadlineProtocol.read_seconds = read_seconds
        # gasgi builds its protocol by this module-level name; this process serves only
        # through this worker class, so pointing it at our subclass is contained.
        gasgi.ASGIProtocol = DeadlineProtocol
        fast = getattr(wsgi, "wsgi_app", None)
        if not (isinstance(fast, LoopHandler) and fast.async_ready()):
            fast = None
        self.asgi = BufferedWSGI(
            wsgi,
            threads=self.cfg.threads,
            read_seconds=read_seconds,
            max_body_bytes=max_body,
            fast=fast,
        )
