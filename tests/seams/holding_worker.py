"""A Celery app for the restart test: the real worker plus one test task that holds a
thread for a while and then records that it ran, so a Redis restart can find the worker
with delivered, unacknowledged messages and a BRPOP in flight (the state in which kombu
5.7 made the worker exit; worker/broker_recovery.py).

Start it with `celery -A tests.seams.holding_worker worker ...` (ROOT on PYTHONPATH).
"""

from __future__ import annotations

import os
import time

import redis

from worker import app

DONE_KEY = "lls:test:held:{name}"


@app.task(name="lls_test.hold", acks_late=True)
def hold(seconds: float, name: str) -> None:
    """Sleep `seconds`, then set `lls:test:held:{name}` in the worker's Redis."""
    time.sleep(seconds)
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        client.set(DONE_KEY.format(name=name), "1", ex=600)
    finally:
        client.close()


__all__ = ["app", "hold"]
