"""The simulated event bus: stored change events per topic, opaque replay ids, retention.

Replay ids are 9 opaque bytes (a version byte and a position scrambled with a per-bus key),
not contiguous between events; clients must treat them as opaque, as with Salesforce. An id
this bus did not issue, or one whose event has been purged (retention, or the `expire`
knob that simulates 72 hours passing), is "corrupted" for a subscription.
"""

from __future__ import annotations

import copy
import io
import json
import secrets
import struct
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastavro

from salesforce_sandbox import schemas

RETENTION_SECONDS = 72 * 3600
_STRIDE = 7  # positions are not contiguous


@dataclass(frozen=True, slots=True)
class Stored:
    position: int
    replay_id: bytes
    event_uuid: str
    schema_id: str
    payload: bytes
    stored_at: float


class ReplayIdError(Exception):
    """A replay id the bus cannot resume from (unknown, malformed or purged)."""


class Bus:
    """Topics -> stored events; thread-safe; `wait` wakes subscribers on publish."""

    def __init__(self, retention_seconds: float = RETENTION_SECONDS) -> None:
        self.retention_seconds = retention_seconds
        self._key = secrets.randbits(64)
        self._lock = threading.Condition()
        self._events: dict[str, list[Stored]] = {t: [] for t in schemas.TOPIC_ENTITIES}
        self._next = 1
        self._floor: dict[str, int] = dict.fromkeys(schemas.TOPIC_ENTITIES, 0)  # purged below
        self.schema_texts: dict[str, str] = {}
        self.parsed: dict[str, Any] = {}
        self.topic_schema: dict[str, str] = {}
        self.current: dict[str, dict[str, Any]] = {}  # topic -> its current schema (JSON)
        for topic, entity in schemas.TOPIC_ENTITIES.items():
            self._use(topic, copy.deepcopy(schemas.SCHEMAS[entity]))

    def _use(self, topic: str, schema: dict[str, Any]) -> str:
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
        sid = schemas.schema_id(text)
        self.schema_texts[sid] = text
        self.parsed[sid] = fastavro.parse_schema(json.loads(text))
        self.topic_schema[topic] = sid
        self.current[topic] = schema
        return sid

    def add_field(self, topic: str, name: str) -> str:
        """Schema drift: the admin adds a (nullable text) field; a new schema id serves the
        topic's later events, and the old id stays readable. Returns the new id."""
        with self._lock:
            schema = copy.deepcopy(self.current[topic])
            schema["fields"].append({"name": name, "type": ["null", "string"], "default": None})
            return self._use(topic, schema)

    # ---- replay ids ----------------------------------------------------------------------
    def _encode(self, position: int) -> bytes:
        return b"\x01" + struct.pack(">Q", position ^ self._key)

    def _decode(self, replay_id: bytes) -> int:
        if len(replay_id) != 9 or replay_id[0] != 1:
            raise ReplayIdError("replay id is malformed")
        return int(struct.unpack(">Q", replay_id[1:])[0]) ^ self._key

    # ---- writing -------------------------------------------------------------------------
    def publish(self, topic: str, body: Mapping[str, Any], event_uuid: str | None = None) -> bytes:
        """Store one change event (Avro-encoded with the topic's schema); returns its replay id."""
        sid = self.topic_schema[topic]
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self.parsed[sid], dict(body))
        with self._lock:
            self._purge_locked()
            position = self._next
            self._next += _STRIDE
            replay_id = self._encode(position)
            event_id = event_uuid or str(uuid.uuid4())
            stored = Stored(position, replay_id, event_id, sid, buffer.getvalue(), time.time())
            self._events[topic].append(stored)
            self._lock.notify_all()
            return stored.replay_id

    def expire_all(self) -> int:
        """Purge every stored event, as if the retention window had passed (a knob)."""
        with self._lock:
            count = 0
            self._next += _STRIDE  # the new tip is valid, every id issued before is not
            for topic, events in self._events.items():
                count += len(events)
                self._floor[topic] = self._next - 1
                events.clear()
            return count

    def _purge_locked(self) -> None:
        cutoff = time.time() - self.retention_seconds
        for topic, events in self._events.items():
            while events and events[0].stored_at < cutoff:
                self._floor[topic] = events.pop(0).position + 1

    # ---- reading -------------------------------------------------------------------------
    def start_after(self, topic: str, preset: int, replay_id: bytes) -> int:
        """The position a subscription starts after (LATEST=0, EARLIEST=1, CUSTOM=2)."""
        with self._lock:
            self._purge_locked()
            events = self._events[topic]
            if preset == 1:
                return (events[0].position - 1) if events else self._next - 1
            if preset == 0:
                return self._next - 1
            position = self._decode(replay_id)
            if position >= self._next or position < self._floor[topic]:
                raise ReplayIdError("replay id is unknown or older than the retention window")
            return position

    def read_after(self, topic: str, position: int, limit: int) -> list[Stored]:
        with self._lock:
            return [e for e in self._events[topic] if e.position > position][:limit]

    def replay_id_of(self, position: int) -> bytes:
        """The opaque id of a position (an event or a stream tip)."""
        return self._encode(position)

    def latest_replay_id(self, topic: str) -> bytes:
        with self._lock:
            events = self._events[topic]
            return events[-1].replay_id if events else self._encode(self._next - 1)

    def wait(self, timeout: float) -> None:
        with self._lock:
            self._lock.wait(timeout)

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self._events[topic])
