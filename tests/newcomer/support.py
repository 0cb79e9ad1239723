"""Helpers for the newcomer scenarios: a decoy Redis standing in for the default address,
and a dev mode started the way a person starts it (own session, Ctrl-C to its group)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from worker.embedded_redis import RedisServer, free_port
from worker.settings import TEST_DEFAULT_REDIS_VAR, Settings

ROOT = Path(__file__).resolve().parents[2]
DECOY_KEYS = {0: {"other-app:session": "keep me"}, 15: {"other-app:cache": "keep me too"}}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any product setting (a new user's shell), plus `extra`."""
    names = {f.alias for f in Settings.model_fields.values() if f.alias}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in names
        and not k.startswith(("LLS_", "CELERY", "FLOWER_", "VIRTUAL_ENV"))
        and k not in {"PORT", "SANDBOX_PORT", "PYTHONPATH"}
    }
    env.update(extra)
    return env


@contextlib.contextmanager
def decoy_redis() -> Iterator[RedisServer]:
    """Another app's Redis at the "default address": keys in db 0 and db 15."""
    server = RedisServer(appendonly=False).start()
    try:
        for db, keys in DECOY_KEYS.items():
            client = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/{db}")
            client.mset(keys)
            client.close()
        yield server
    finally:
        server.cleanup()


def decoy_untouched(server: RedisServer) -> dict[int, dict[str, Any]]:
    """Every database of the decoy, as {db: {key: value}} (only the decoy's own keys)."""
    out: dict[int, dict[str, Any]] = {}
    for db in range(16):
        client = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/{db}")
        keys = [k.decode() for k in client.keys("*")]
        if keys:
            out[db] = {k: (client.get(k) or b"").decode() for k in keys}
        client.close()
    return out


def default_address_env(port: int) -> dict[str, str]:
    """Make `port` the default Redis address (test-only variable, see worker/settings.py)."""
    return {TEST_DEFAULT_REDIS_VAR: f"127.0.0.1:{port}"}


def dev_ports() -> dict[str, str]:
    """Free loopback ports for the receiver, Flower and the simulator."""
    return {
        "PORT": str(free_port()),
        "FLOWER_PORT": str(free_port()),
        "SANDBOX_PORT": str(free_port()),
    }


class DevRun:
    """A dev mode process in its own session, with its output in a file."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.out_path = cwd / "dev.out"
        self._out = self.out_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def text(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_running(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if "leadlex-sync is running" in text:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"dev mode exited {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.3)
        raise AssertionError(f"dev mode not running after {timeout}s:\n{self.text()[-4000:]}")

    def ctrl_c(self, timeout: float = 90.0) -> int:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._out.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.3) -> Any:
    """Poll until predicate() is truthy; fail with the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")
