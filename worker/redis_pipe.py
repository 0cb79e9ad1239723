"""One pipelined Redis connection on an asyncio loop, for the receiver's loop hand-off.

The receiver's webhook POSTs are answered on gunicorn's event loop (webhook_app.serving,
RECEIVER_ASYNC_HANDOFF) and hand their events off in one EVAL per group of requests
(worker.handoff.AsyncSubmitter). redis.asyncio spent ~85-100 µs of CPU per call on its own
machinery (a pool checkout, socket timeouts around the write and the read, a task per
call) against a ~20 µs round trip of bytes (docs/benchmarks-more.md). This is only what
that hand-off needs: commands already packed (hiredis's C packer), written on one
connection as they come, replies (hiredis's C parser) handed in order to the callbacks
that wait for them. Redis answers a connection's commands in the order it received
them, so a FIFO of callbacks is the whole bookkeeping.

- Connecting: TCP (`host`, `port`) or a unix socket (`path`), then AUTH (`username`,
  `password`), SELECT `db` and CLIENT SETNAME `name` pipelined, bounded by
  `connect_timeout`. TLS and Sentinel are not handled here (the receiver uses its
  threads for those: AsyncSubmitter.available).
- A lost connection fails every waiting callback with ConnectionError; the next `send`
  connects again. `stale(seconds)` closes a connection whose oldest command has waited
  that long (a Redis that stopped answering without closing the socket), failing its
  waiters the same way, so the next request does not queue behind them.
- Bounds on waiting belong to the caller (AsyncSubmitter's per-request timeout); a reply
  that comes after its waiter gave up is read and dropped, so the order holds.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Callable
from typing import Any

import hiredis

# A reply: the decoded value, or the exception to raise (a Redis error reply, a lost
# connection).
Reply = Any
OnReply = Callable[[Reply], None]


class ReplyError(Exception):
    """An error reply from Redis (`-ERR ...`, `-NOSCRIPT ...`)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: RedisPipe) -> None:
        self.pipe = pipe
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.transport: asyncio.Transport | None = None
        # (callback, when sent: monotonic seconds), oldest first.
        self.waiting: collections.deque[tuple[OnReply, float]] = collections.deque()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:  # the stream is not RESP: drop it
                self.close(ConnectionError(f"redis: protocol error ({exc})"))
                return
            if reply is False:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.close(ConnectionError("redis: unexpected reply"))
                return
            callback, _ = waiting.popleft()
            callback(reply)

    def send(self, packed: bytes, on_reply: OnReply) -> None:
        """Write one packed command; `on_reply` gets its reply in turn."""
        assert self.transport is not None
        self.waiting.append((on_reply, time.monotonic()))
        self.transport.write(packed)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis: connection lost ({type(exc).__name__})"))

    def close(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.lost = True
        if self.pipe._protocol is self:
            self.pipe._protocol = None
        waiting, self.waiting = self.waiting, collections.deque()
        for callback, _ in waiting:
            callback(ConnectionError(str(error)))


class RedisPipe:
    """One connection to Redis on the running loop; see the module's docstring.

    Build and use it on one event loop (its connection belongs to that loop)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        name: str | None = None,
        connect_timeout: float = 2.0,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.name = name
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def send(self, packed: bytes, on_reply: OnReply) -> None:
        """Write one packed command now; `on_reply` gets its reply (or the exception)
        later, on the loop. Raises ConnectionError when not connected (`connect` first)."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise ConnectionError("redis: not connected")
        protocol.send(packed, on_reply)

    async def connect(self) -> None:
        """Connect (once, however many callers wait for it), bounded by connect_timeout."""
        if self._protocol is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            if self.path:
                _, protocol = await loop.create_unix_connection(
                    lambda: _Protocol(self), self.path
                )
            else:
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
            hello: list[tuple[Any, ...]] = []
            if self.password is not None:
                if self.username is not None:
                    hello.append(("AUTH", self.username, self.password))
                else:
                    hello.append(("AUTH", self.password))
            if self.db:
                hello.append(("SELECT", self.db))
            if self.name:
                hello.append(("CLIENT", "SETNAME", self.name))
            replies: list[asyncio.Future[Reply]] = []
            for command in hello:
                future: asyncio.Future[Reply] = loop.create_future()
                protocol.send(hiredis.pack_command(command), _resolve(future))
                replies.append(future)
            try:
                for command, future in zip(hello, replies, strict=True):
                    reply = await future
                    if isinstance(reply, Exception):
                        # The command's name only: AUTH's arguments are the credentials.
                        raise ConnectionError(f"redis: {command[0]} refused ({reply})")
            except BaseException:
                protocol.close(ConnectionError("redis: connect failed"))
                raise
        if protocol.lost:
            raise ConnectionError("redis: connection lost while connecting")
        self._protocol = protocol
        return protocol

    def stale(self, seconds: float) -> bool:
        """Close the connection if its oldest command has waited `seconds` or more (its
        waiters get ConnectionError). True if it was closed."""
        protocol = self._protocol
        if protocol is None or not protocol.waiting:
            return False
        if time.monotonic() - protocol.waiting[0][1] < seconds:
            return False
        protocol.close(ConnectionError(f"redis: no reply in {seconds:g} s"))
        return True

    def close(self) -> None:
        protocol = self._protocol
        if protocol is not None:
            protocol.close(ConnectionError("redis: connection closed"))
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None


def _resolve(future: asyncio.Future[Reply]) -> OnReply:
    def on_reply(reply: Reply) -> None:
        if not future.done():
            future.set_result(reply)

    return on_reply
