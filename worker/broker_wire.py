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
import json
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
    ids: bytes | None = None,
) -> tuple[str, str]:
    """(list key, envelope JSON) of one task message for `queue`, as kombu would LPUSH it;
    `countdown` as apply_async's (Celery's own `eta` header); `ids`: 32 bytes to make the
    two UUIDs from (tests, EnvelopeTemplate), else random."""
    # Two version-4 UUIDs (task id, delivery tag) from one system call, as uuid4() makes each.
    ids = os.urandom(32) if ids is None else ids
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


_TEMPLATE_IDS = bytes(range(1, 33))  # two UUIDs no real message has, to find in the template
_TEMPLATE_ARGS = "\u0001leadlex-args\u0001"
_TEMPLATE_REPR = "\u0001leadlex-argsrepr\u0001"


class EnvelopeTemplate:
    """`task_envelope` for one task and queue, precomputed (issue 14: it was ~10 % of a
    webhook's CPU on the event loop): built once through task_envelope itself with marker
    ids, args and argsrepr, then each message only fills those in (two UUIDs, the base64
    body, argsrepr). Equal to task_envelope's output for the same ids
    (tests/receiver/test_broker_wire.py).

    The envelope holds the building process's and thread's names (Celery's `origin`,
    `reply_to`): build and use it in one process and one thread (AsyncSubmitter: on its
    event loop). No countdown (its `eta` is a time)."""

    def __init__(self, app: Celery, task_name: str, *, queue: str, kwargsrepr: str = "{}") -> None:
        self.queue = queue
        _, envelope = task_envelope(
            app,
            task_name,
            [_TEMPLATE_ARGS],
            queue=queue,
            argsrepr=_TEMPLATE_REPR,
            kwargsrepr=kwargsrepr,
            ids=_TEMPLATE_IDS,
        )
        task_id = str(uuid.UUID(bytes=_TEMPLATE_IDS[:16], version=4))
        tag = str(uuid.UUID(bytes=_TEMPLATE_IDS[16:], version=4))
        decoded = json.loads(envelope)
        body = base64.b64decode(decoded["body"]).decode(decoded["content-encoding"] or "utf-8")
        marker_args = json_dumps([_TEMPLATE_ARGS])
        self._body = _split_once(body, marker_args)
        self._encoding = decoded["content-encoding"] or "utf-8"
        marker_body = json_dumps(decoded["body"])
        marker_repr = json_dumps(_TEMPLATE_REPR)
        # The envelope's text cut at each marker; the ids appear more than once.
        parts: list[str] = []
        rest = envelope
        self._slots: list[str] = []
        while True:
            found = [
                (rest.find(m), m, name)
                for m, name in (
                    (task_id, "id"),
                    (tag, "tag"),
                    (marker_body, "body"),
                    (marker_repr, "repr"),
                )
                if m in rest
            ]
            if not found:
                break
            at, marker, name = min(found)
            parts.append(rest[:at])
            self._slots.append(name)
            rest = rest[at + len(marker) :]
        parts.append(rest)
        self._parts = parts
        if sorted(set(self._slots)) != ["body", "id", "repr", "tag"]:
            raise ValueError(f"unexpected task envelope shape: {self._slots}")

    def build(self, args: list[Any], argsrepr: str, ids: bytes | None = None) -> tuple[str, str]:
        """(list key, envelope JSON), as task_envelope(app, task, args, queue=...,
        argsrepr=argsrepr, kwargsrepr=..., ids=ids) returns them."""
        ids = os.urandom(32) if ids is None else ids
        head, tail = self._body
        raw = (head + json_dumps(args) + tail).encode(self._encoding)
        values = {
            "id": _uuid4(ids[:16]),
            "tag": _uuid4(ids[16:]),
            "body": '"' + base64.b64encode(raw).decode("ascii") + '"',
            "repr": json_dumps(argsrepr),
        }
        parts = self._parts
        out = [parts[0]]
        for slot, part in zip(self._slots, parts[1:], strict=True):
            out.append(values[slot])
            out.append(part)
        return self.queue, "".join(out)


def _split_once(text: str, marker: str) -> tuple[str, str]:
    head, found, tail = text.partition(marker)
    if not found or marker in tail:
        raise ValueError("unexpected task body shape")
    return head, tail


def _uuid4(raw: bytes) -> str:
    """str(uuid.UUID(bytes=raw, version=4)), without building the UUID object."""
    b = bytearray(raw)
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
