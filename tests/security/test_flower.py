"""What Flower shows an operator: task ids and references, never contact data (issue 11)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cli.devmode import venv_bin
from tests.integration.conftest import WorkerProcess, worker_env
from tests.receiver.conftest import close_app
from tests.receiver.senders import dumps, hubspot_event, hubspot_v3_headers, make_settings
from webhook_app import create_app
from worker.embedded_redis import free_port
from worker.state import INBOX

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "jane.private@example.org"
PHONE = "+1 415 555 0199"
AUTH = ("ops", "flower-pw-Zq81")


@pytest.fixture
def flower(redis_url: str, sandbox: Any, tmp_path: Path) -> Iterator[str]:
    """`celery -A worker flower --conf=deploy/flowerconfig.py` on a free port; its base URL."""
    port = free_port()
    env = worker_env(
        redis_url,
        sandbox,
        FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}",
        FLOWER_PORT=str(port),
        PYTHONPATH=str(ROOT),
    )
    log = tmp_path / "flower.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [venv_bin("celery"), "-A", "worker", "flower", f"--conf={ROOT}/deploy/flowerconfig.py"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthcheck", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _ingest_tasks(base: str) -> dict[str, Any]:
    tasks = httpx.get(f"{base}/api/tasks", auth=AUTH, timeout=5).json()
    return {k: v for k, v in tasks.items() if v.get("name") == "leadlex_sync.ingest_batch"}


def test_flower_shows_references_not_contact_data(
    redis_url: str,
    redis_client: redis.Redis,
    flower: str,
    workers: Callable[..., WorkerProcess],
) -> None:
    """A webhook carrying an email and a phone reaches the worker, and neither Flower's task
    list, the task's page, nor the worker's page shows them; Flower needs its login."""
    worker = workers("flowerw")
    app = create_app(make_settings(redis_url))
    try:
        body = dumps(
            [
                hubspot_event(eventId=1, propertyName="email", propertyValue=EMAIL),
                hubspot_event(eventId=2, propertyName="phone", propertyValue=PHONE),
            ]
        )
        response = app.test_client().post(
            "/webhooks/hubspot", data=body, headers=hubspot_v3_headers(body)
        )
        assert response.status_code == 200
    finally:
        close_app(app)
    fingerprints = [k.decode() for k in redis_client.hkeys(INBOX)]
    assert len(fingerprints) == 2

    deadline = time.monotonic() + 30
    tasks: dict[str, Any] = {}
    while time.monotonic() < deadline:
        tasks = _ingest_tasks(flower)
        if any(t.get("state") == "SUCCESS" for t in tasks.values()):
            break
        time.sleep(0.5)
    assert tasks, "Flower saw no ingest task"
    [(task_id, task)] = tasks.items()
    assert task["state"] == "SUCCESS", task
    assert task["kwargs"] == "{}"
    assert "event refs" in task["args"]
    pages = [
        json.dumps(tasks),
        httpx.get(f"{flower}/api/task/info/{task_id}", auth=AUTH, timeout=5).text,
        httpx.get(f"{flower}/task/{task_id}", auth=AUTH, timeout=5).text,
        httpx.get(f"{flower}/worker/{worker.name}@{_hostname()}", auth=AUTH, timeout=5).text,
    ]
    for page in pages:
        assert EMAIL not in page
        assert "415 555" not in page
    # The worker did take both events in, read from the inbox by reference (no link: parked).
    assert "'unlinked': 2" in str(task.get("result")), task
    assert httpx.get(f"{flower}/api/tasks", timeout=5).status_code == 401


def _hostname() -> str:
    import socket

    return socket.gethostname()
