"""The receiver's broker message written in its own MULTI (worker.broker_wire) is the
message kombu itself would store, so every worker reads it like any other."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from celery import Celery

from worker.broker_wire import task_envelope
from worker.celery_app import QUEUE_INGEST
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
