"""One Celery task message exactly as kombu's Redis transport stores it, to be written
with other commands in one Redis MULTI (issue 14: the receiver's inbox record and its
broker message in one round trip instead of four: inbox, kombu publish, Flower's "sent"
event, metrics).

kombu's Redis transport delivers a message to a queue with `LPUSH {queue} {envelope}`
(priority 0: the queue's own list; anonymous exchange, as Celery routes a task to a named
queue): the envelope is JSON with the Celery protocol-2 body (base64), the task headers
and the properties below. `task_envelope` builds it with Celery's own
`app.amqp.as_task_v2` and kombu's own serializer, so only the envelope's outer shape is
written here; `tests/receiver/test_broker_wire.py` checks it field by field against what
kombu itself stores, and the end-to-end tests run real workers on it.

No Flower "task-sent" event is published for these messages (Flower lists the task when a
worker receives it); `task_send_sent_event` still applies to every other message.
"""

from __future__ import annotations

import base64
import os
import uuid
from typing import Any

from celery import Celery
from kombu.serialization import dumps as kombu_dumps
from kombu.utils.json import dumps as json_dumps


def task_envelope(
    app: Celery,
    task_name: str,
    args: list[Any],
    *,
    queue: str,
    argsrepr: str,
    kwargsrepr: str = "{}",
    countdown: float | None = None,
) -> tuple[str, str]:
    """(list key, envelope JSON) of one task message for `queue`, as kombu would LPUSH it;
    `countdown` as apply_async's (Celery's own `eta` header)."""
    # Two version-4 UUIDs (task id, delivery tag) from one system call, as uuid4() makes each.
    ids = os.urandom(32)
    task_id = str(uuid.UUID(bytes=ids[:16], version=4))
    message = app.amqp.as_task_v2(
        task_id,
        task_name,
        args,
        {},
        countdown=countdown or None,
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
        reply_to=app.thread_oid,
        ignore_result=None,  # as send_task leaves it: the task's own setting applies
    )
    content_type, content_encoding, body = kombu_dumps(message.body, serializer="json")
    raw = body if isinstance(body, bytes) else body.encode(content_encoding or "utf-8")
    properties = {
        **message.properties,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.UUID(bytes=ids[16:], version=4)),
    }
    envelope = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": properties,
    }
    return queue, json_dumps(envelope)
