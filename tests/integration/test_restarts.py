"""Restarts (issue 14): a worker survives Redis dying under it and resumes consuming by
itself, with a real redis-server killed (SIGKILL) and restarted on the same port and a
real Celery worker subprocess."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import redis
from celery import Celery

from tests.integration.conftest import Sandbox, WorkerProcess, worker_env
from tests.seams.holding_worker import DONE_KEY
from worker.celery_app import QUEUE_INGEST, QUEUES
from worker.embedded_redis import RedisServer

RESUME_BOUND_SECONDS = 30.0


def _wait_for(client: redis.Redis, key: str, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if client.exists(key):
                return time.monotonic() - start
        except redis.RedisError:
            pass
        time.sleep(0.1)
    return None


def test_worker_survives_redis_restarts_with_tasks_in_flight(sandbox: Sandbox) -> None:
    """Redis killed three times while two acks_late tasks run and a BRPOP waits: the worker
    never exits and takes new work within the bound after each restart."""
    tmp = Path(tempfile.mkdtemp(prefix="lls-restarts-"))
    server = RedisServer(data_dir=tmp / "redis").start()
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    sender = Celery(broker=server.url)
    worker = WorkerProcess(
        worker_env(server.url, sandbox),
        "restarts",
        beat=False,
        log_dir=tmp,
        queues=QUEUES,
        app="tests.seams.holding_worker",
    )
    try:
        worker.start()
        for cycle in range(3):
            # Two long tasks in flight (delivered, unacked), two free threads in BRPOP.
            for n in range(2):
                sender.send_task("lls_test.hold", args=[4.0, f"c{cycle}-{n}"], queue=QUEUE_INGEST)
            assert _wait_for(client, "missing", 1.5) is None  # let the worker take them
            server.kill()
            time.sleep(1.0)
            server.start()
            time.sleep(1.0)
            assert worker.proc is not None
            assert worker.proc.poll() is None, worker.log()[-3000:]
            sender.send_task("lls_test.hold", args=[0.0, f"after-{cycle}"], queue=QUEUE_INGEST)
            took = _wait_for(client, DONE_KEY.format(name=f"after-{cycle}"), RESUME_BOUND_SECONDS)
            assert took is not None, f"cycle {cycle}: no task consumed\n{worker.log()[-3000:]}"
        assert worker.proc.poll() is None
        assert "Unrecoverable error" not in worker.log()
    finally:
        worker.stop()
        client.close()
        server.cleanup()
