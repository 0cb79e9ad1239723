"""Real parts for end-to-end tests: the LeadLex simulator on loopback, Celery worker
subprocesses on the test Redis, and the receiver app posting into that Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.devmode import venv_bin
from leadlex_sandbox import SandboxConfig, SandboxServer
from tests.integration.support import API_KEY, HUBSPOT_SECRET, PUBLIC_BASE
from worker.celery_app import QUEUES

ROOT = Path(__file__).resolve().parents[2]


class Sandbox:
    """Test-side handle on a running simulator: seed, read, configure, read the log."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=10)

    @property
    def base_url(self) -> str:
        return str(self.server.base_url)

    def reset(self) -> None:
        self.http.post("/_sandbox/reset").raise_for_status()

    def configure(self, **knobs: Any) -> None:
        self.http.post("/_sandbox/config", json=knobs).raise_for_status()

    def faults(self, **knobs: Any) -> None:
        self.http.post("/_sandbox/faults", json=knobs).raise_for_status()

    def seed(self, **fields: Any) -> str:
        resp = self.http.post("/_sandbox/contacts", json=fields)
        resp.raise_for_status()
        data = resp.json()["data"]
        row = data[0] if isinstance(data, list) else data
        return str(row["id"])

    def contact(self, contact_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/_sandbox/contacts/{contact_id}")
        resp.raise_for_status()
        return dict(resp.json()["data"])

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        resp = self.http.get("/_sandbox/requests")
        resp.raise_for_status()
        rows = resp.json()["data"]
        return [r for r in rows if method is None or r["method"] == method]

    def patches(self, contact_id: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests("PATCH")
            if contact_id is None or r.get("contact_id") == contact_id
        ]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """One simulator for the session (reset before each test that uses it)."""
    server = SandboxServer(
        SandboxConfig(api_keys={API_KEY: frozenset({"read", "write"})}, plan="org")
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[Sandbox]:
    """The simulator, reset to Org limits with our key."""
    sb = Sandbox(sandbox_server)
    sb.reset()
    sb.configure(api_keys={API_KEY: ["read", "write"]}, plan="org")
    yield sb
    sb.http.close()


def worker_env(redis_url: str, sandbox: Sandbox, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADLEX_", "CELERY"))}
    env.update(
        {
            "REDIS_URL": redis_url,
            "LEADLEX_API_KEY": API_KEY,
            "LEADLEX_BASE_URL": sandbox.base_url,
            "LEADLEX_PLAN": "org",
            "COALESCE_SECONDS": "0.5",
            "VISIBILITY_TIMEOUT_SECONDS": "12",
            "FLUSH_LEASE_SECONDS": "4",
            "LEADLEX_TIMEOUT_SECONDS": "3",
            "NOTES_SETTLE_DELAY_SECONDS": "0.5",
            "CIRCUIT_PROBE_SECONDS": "2",
            "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "PUBLIC_BASE_URL": PUBLIC_BASE,
            "LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class WorkerProcess:
    """A `celery -A worker worker` subprocess (threads pool: SIGKILL takes all of it)."""

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        *,
        beat: bool,
        log_dir: Path,
        queues: tuple[str, ...] | None = QUEUES,
        app: str = "worker",
    ) -> None:
        self.env = env
        self.queues = queues
        self.app = app
        self.name = name
        self.beat = beat
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._schedule = log_dir / f"{name}-beat"

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        argv = [
            venv_bin("celery"), "-A", self.app, "worker",
            *(["-Q", ",".join(self.queues)] if self.queues is not None else []),
            "-P", "threads", "-c", "4", "-n", f"{self.name}@%h", "-l", "INFO",
            "--without-gossip", "--without-mingle",
        ]
        if self.beat:
            argv += ["-B", "-s", str(self._schedule)]
        with self.log_path.open("ab") as log:
            # Own process group: the embedded beat (-B) is a child that must die with it.
            self.proc = subprocess.Popen(
                argv, env=self.env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b"ready." in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def _signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the worker and its beat child: a crash at whatever line they are on."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown; anything of the group still alive after 15 s is killed."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=15)
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def workers(
    redis_url: str, sandbox: Sandbox
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start worker processes (the first one also runs beat); all stopped after."""
    started: list[WorkerProcess] = []
    tmp = Path(tempfile.mkdtemp(prefix="lls-workers-"))

    def start(
        name: str | None = None,
        *,
        beat: bool | None = None,
        queues: tuple[str, ...] | None = QUEUES,
        app: str = "worker",
        **env: str,
    ) -> WorkerProcess:
        """`queues=None` starts the plain `celery -A worker worker` (no -Q)."""
        proc = WorkerProcess(
            worker_env(redis_url, sandbox, **env),
            name or f"w{len(started) + 1}",
            beat=(not started) if beat is None else beat,
            log_dir=tmp,
            queues=queues,
            app=app,
        )
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
    if os.environ.get("LLS_KEEP_WORKER_LOGS"):
        print(f"worker logs in {tmp}")


@pytest.fixture
def receiver(redis_url: str, sandbox: Sandbox) -> Any:
    """The real receiver app (Flask test client) enqueueing into the test Redis."""
    from webhook_app import create_app
    from worker.settings import load_settings

    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "HUBSPOT_CLIENT_SECRET": HUBSPOT_SECRET,
            "PUBLIC_BASE_URL": PUBLIC_BASE,
            "SALESFORCE_ORG_IDS": "00D5g000004XmPqEAK",
            "SALESFORCE_TOKEN": "sf-Qm3vT8xK2pLw9ZrB4nYc7HdJ6sFa1Ge5",
            "GENERIC_WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        },
        require_leadlex=False,
        env_file=None,
    )
    return create_app(settings).test_client()


