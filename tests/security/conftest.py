"""Real gunicorn with the shipped config (deploy/gunicorn.conf.py) on a private Redis.

Each probe of issue 11 runs against this, as an attacker would reach it: over a socket,
through gunicorn's worker class, with the receiver's real settings checks.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cli.devmode import venv_bin
from tests.integration.conftest import (  # noqa: F401 - fixtures for test_flower.py
    sandbox,
    sandbox_server,
    workers,
)
from tests.receiver.senders import GENERIC_SECRET, HUBSPOT_SECRET, ORG_18
from worker.embedded_redis import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "gunicorn.conf.py"
SF_TOKEN = "sec-7Hq2Vn9LxB4mRt8Kc3Wz6Pj1Ds5Fg0Ya"


@dataclass
class Web:
    """One gunicorn process serving `webhook_app:create_app()` with the shipped config."""

    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Web:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [venv_bin("gunicorn"), "-c", str(CONF), "webhook_app:create_app()"],
                env=self.env,
                cwd=self.log_path.parent,  # no .env there
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        """/healthz answers 200 within 2 s."""
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def web_env(redis_url: str, port: int, **overrides: str) -> dict[str, str]:
    """The environment of a receiver with every source configured (Salesforce with a token)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env = {
        **keep,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",  # one process: the hardest case for slow clients
        "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SALESFORCE_ORG_IDS": ORG_18,
        "SALESFORCE_TOKEN": SF_TOKEN,
        "GENERIC_WEBHOOK_SECRET": GENERIC_SECRET,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        **overrides,
    }
    return {k: v for k, v in env.items() if v != ""}


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own (some probes stop it with SIGSTOP)."""
    server = RedisServer(appendonly=False).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def web(private_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """gunicorn -c deploy/gunicorn.conf.py "webhook_app:create_app()" on a free port."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("web")
    server = Web(
        port,
        web_env(private_redis.url, port, DLQ_INVALID_MAXLEN="100", REQUEST_READ_SECONDS="4"),
        tmp / "gunicorn.log",
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(private_redis: RedisServer, web: Web) -> Iterator[redis.Redis]:
    """A client on the web server's Redis, emptied before the test."""
    client = redis.Redis.from_url(private_redis.url)
    client.flushdb()
    yield client
    client.close()


def run_gunicorn_until_exit(env: dict[str, str], cwd: Path, timeout: float = 30.0) -> str:
    """Run the shipped gunicorn command to its exit (it must refuse to start); its output."""
    result = subprocess.run(
        [venv_bin("gunicorn"), "-c", str(CONF), "webhook_app:create_app()"],
        env=env,
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode != 0
    return (result.stdout + result.stderr).decode(errors="replace")


__all__ = ["SF_TOKEN", "Web", "run_gunicorn_until_exit", "web_env"]
