"""The receiver's broker message written in its own MULTI (worker.broker_wire) is the
message kombu itself would store, so every worker reads it like any other."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery

from worker.broker_wire import task_envelope
from worker.celery_app import QUEUE_FLUSH, QUEUE_INGEST
from worker.handoff import INGEST_TASK, ingest_message_args

# Differ per message (ids, tags) or per process (origin, reply_to): compared by shape only.
VARYING_HEADERS = {"id", "root_id", "origin"}
VARYING_PROPERTIES = {"correlation_id", "reply_to", "delivery_tag"}


def _normal(envelope: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(envelope))
    out["headers"] = {k: v for k, v in out["headers"].items() if k not in VARYING_HEADERS}
    out["properties"] = {k: v for k, v in out["properties"].items() if k not in VARYING_PROPERTIES}
    out["body"] = json.loads(base64.b64decode(out["body"]))
    return out


def test_envelope_matches_what_kombu_stores(redis_url: str, redis_client: redis.Redis) -> None:
    """An ingest message built by task_envelope equals, field by field (ids aside), the one
    Celery + kombu LPUSH for the same send_task."""
    app = Celery("leadlex_sync_wire_test", broker=redis_url)
    args = ingest_message_args(["fp-1", "fp-2"], "hubspot")
    app.send_task(INGEST_TASK, **args)
    stored = json.loads(redis_client.lpop(QUEUE_INGEST) or b"{}")
    key, ours = task_envelope(
        app,
        INGEST_TASK,
        args["args"],
        queue=args["queue"],
        argsrepr=args["argsrepr"],
        kwargsrepr=args["kwargsrepr"],
    )
    built = json.loads(ours)
    assert key == QUEUE_INGEST
    assert _normal(built) == _normal(stored)
    assert set(built["headers"]) == set(stored["headers"])
    assert set(built["properties"]) == set(stored["properties"])
    assert built["headers"]["id"] == built["headers"]["root_id"]
    assert built["properties"]["correlation_id"] == built["headers"]["id"]
    app.close()


def test_flush_envelope_with_countdown_matches_apply_async(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A flush message with a countdown (the worker's batched flush dispatch) equals what
    apply_async(countdown=...) stores, its `eta` header included (to the clock's tick)."""
    app = Celery("leadlex_sync_wire_test", broker=redis_url)
    app.send_task(
        "leadlex_sync.flush_contact",
        args=["contact-1"],
        queue=QUEUE_FLUSH,
        countdown=30,
        argsrepr=repr(["contact-1"]),
        kwargsrepr="{}",
    )
    stored = json.loads(redis_client.lpop(QUEUE_FLUSH) or b"{}")
    key, ours = task_envelope(
        app,
        "leadlex_sync.flush_contact",
        ["contact-1"],
        queue=QUEUE_FLUSH,
        argsrepr=repr(["contact-1"]),
        countdown=30,
    )
    built = json.loads(ours)
    assert key == QUEUE_FLUSH
    eta_built, eta_stored = (
        datetime.fromisoformat(e["headers"].pop("eta")) for e in (built, stored)
    )
    assert abs((eta_built - eta_stored).total_seconds()) < 5
    assert eta_built > datetime.now(UTC) + timedelta(seconds=25)
    assert _normal(built) == _normal(stored)
    app.close()
