"""EnvelopeTemplate (worker.broker_wire, issue 14): the event loop's precomputed ingest
message is task_envelope's output, byte for byte for the same ids, and the loop path sends
it."""

from __future__ import annotations

import base64
import json
import os
import threading

import pytest

from worker.broker_wire import EnvelopeTemplate, task_envelope
from worker.celery_app import QUEUE_INGEST
from worker.celery_app import app as celery_app
from worker.handoff import INGEST_TASK, ingest_message_args


@pytest.mark.parametrize(
    ("refs", "label"),
    [
        ([], "hubspot"),
        (["a" * 40], "hubspot"),
        ([f"{n:040x}" for n in range(100)], "salesforce"),
        (['fp-\u00e9"quoted\\'], "g\u00e9n\u00e9ric"),  # escaping in body and argsrepr
    ],
)
def test_template_equals_task_envelope_for_the_same_ids(refs: list[str], label: str) -> None:
    args = ingest_message_args(refs, label)
    template = EnvelopeTemplate(
        celery_app, INGEST_TASK, queue=args["queue"], kwargsrepr=args["kwargsrepr"]
    )
    for _ in range(3):
        ids = os.urandom(32)
        expected = task_envelope(
            celery_app,
            INGEST_TASK,
            args["args"],
            queue=args["queue"],
            argsrepr=args["argsrepr"],
            kwargsrepr=args["kwargsrepr"],
            ids=ids,
        )
        assert template.build(args["args"], args["argsrepr"], ids) == expected


def test_template_ids_are_fresh_and_consistent() -> None:
    """Without ids: new random UUIDs each message, the task id in every place it belongs,
    and a body that decodes to the message's args."""
    args = ingest_message_args(["fp-1", "fp-2"], "hubspot")
    template = EnvelopeTemplate(
        celery_app, INGEST_TASK, queue=args["queue"], kwargsrepr=args["kwargsrepr"]
    )
    seen = set()
    for _ in range(5):
        key, raw = template.build(args["args"], args["argsrepr"])
        envelope = json.loads(raw)
        task_id = envelope["headers"]["id"]
        assert key == QUEUE_INGEST
        assert envelope["headers"]["root_id"] == task_id
        assert envelope["properties"]["correlation_id"] == task_id
        assert envelope["properties"]["delivery_tag"] != task_id
        assert envelope["headers"]["argsrepr"] == args["argsrepr"]
        body = json.loads(base64.b64decode(envelope["body"]))
        assert body[0] == args["args"]
        seen.add(task_id)
    assert len(seen) == 5


def test_template_belongs_to_its_thread() -> None:
    """Built on another thread it carries that thread's reply_to (Celery's thread_oid):
    AsyncSubmitter builds it on its loop's thread, where it is used."""
    args = ingest_message_args(["fp-1"], "hubspot")
    built: list[EnvelopeTemplate] = []
    thread = threading.Thread(
        target=lambda: built.append(EnvelopeTemplate(celery_app, INGEST_TASK, queue=args["queue"]))
    )
    thread.start()
    thread.join(10)
    ids = os.urandom(32)
    here = task_envelope(
        celery_app,
        INGEST_TASK,
        args["args"],
        queue=args["queue"],
        argsrepr=args["argsrepr"],
        ids=ids,
    )
    there = built[0].build(args["args"], args["argsrepr"], ids)
    assert (
        json.loads(here[1])["properties"]["reply_to"]
        != json.loads(there[1])["properties"]["reply_to"]
    )


def test_the_loop_connection_packs_eval_as_redis_py() -> None:
    """The loop's connection (worker.redis_pipe) sends the submit EVAL as hiredis packs it:
    the same bytes as redis-py's own packer for its argument types (floats, ints,
    non-ASCII text)."""
    import random

    from hiredis import pack_command
    from redis.connection import Connection

    from worker.handoff import SUBMIT_SCRIPT

    theirs = Connection()
    rng = random.Random(14)
    for n in range(300):
        now = rng.uniform(1.7e9, 1.8e9) if n else 1764551234.0
        command = (
            "EVAL", SUBMIT_SCRIPT, 6, "inbox", "inbox:at", "leadlex-ingest", "n", "l", "c",
            now, 1, f"{n:040x}", json.dumps({"v": "\u00e9\u4e2d" * n}), "{}", "hubspot",
            rng.randrange(1 << 45), "events_total:hubspot", 1, "x", -n,
        )  # fmt: skip
        assert pack_command(command) == b"".join(theirs.pack_command(*command))
