"""The dead-letter store: a Redis stream of what could not be delivered, with why.

Each entry keeps the reason (a short code such as `invalid_event`, `invalid_value`,
`validation_error`, `not_found`, `unlinked_expired`, `max_age`, `notes_uncertain`: a
note LeadLex may or may not hold, its exact text in `payload.leadlex_value`,
`create_uncertain`: a contact create whose outcome could not be told), the source, a JSON
payload (the raw event or the ChangeEvent dict, or the staged fields), details (field,
problem, LeadLex's `details.fields`), attempts, the last LeadLex error and its
`X-Request-ID`.

Two streams, because not every letter is worth the same (issue 11):
- `lls:dlq`: letters about data the product promised not to lose (an acknowledged,
  authenticated, well-formed event that could not be delivered). Never trimmed
  automatically; `dlq purge` removes old entries. Their payloads are ChangeEvent dicts
  built from bodies of at most MAX_BODY_BYTES, so they are not truncated either.
- `lls:dlq:invalid`: `invalid_event` letters, i.e. input that failed validation in the
  receiver (a sender can make as many as it likes). Each letter's payload is capped at
  DLQ_MAX_LETTER_BYTES (longer payloads are kept as their first bytes and marked
  `truncated`), and the stream at DLQ_INVALID_MAXLEN entries: the oldest are trimmed,
  counted in `leadlex_sync_dead_letters_trimmed_total{reason="invalid_event"}` and warned
  about. Their ids carry the prefix `invalid/` (e.g. `invalid/1764540000000-0`).
`iter()`, `get()`, `count()` and `delete()` cover both streams.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.metrics import COUNTERS_KEY, Metrics

log = logging.getLogger("leadlex_sync.deadletter")

STREAM = "lls:dlq"
INVALID_STREAM = "lls:dlq:invalid"
INVALID_PREFIX = "invalid/"
# Reasons whose letters hold only input that failed validation (capped, trimmed).
INVALID_REASONS = frozenset({"invalid_event"})
DEFAULT_MAX_LETTER_BYTES = 65_536
DEFAULT_INVALID_MAXLEN = 10_000

# XADD one letter and trim the stream to its cap, counting what was trimmed.
# KEYS: stream, counters hash   ARGV: maxlen, counter field, then field/value pairs
_ADD_CAPPED = """
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
local trimmed = redis.call('XTRIM', KEYS[1], 'MAXLEN', tonumber(ARGV[1]))
if trimmed > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], trimmed)
end
return trimmed
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead-letter entry, as stored."""

    id: str
    reason: str
    source: str
    payload: Any
    details: dict[str, Any] = field(default_factory=dict)
    contact: str = ""
    attempts: int = 0
    last_error: str = ""
    request_id: str = ""
    created_at: float = 0.0
    truncated: bool = False  # the payload was cut to DLQ_MAX_LETTER_BYTES

    @property
    def created_ms(self) -> int:
        return int(self.id.rpartition("/")[2].split("-", 1)[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "source": self.source,
            "contact": self.contact,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "truncated": self.truncated,
            "details": self.details,
            "payload": self.payload,
        }


def _decode(entry_id: bytes | str, raw: dict[Any, Any], prefix: str = "") -> DeadLetter:
    def s(key: str) -> str:
        value = raw.get(key.encode(), raw.get(key, b""))
        return value.decode() if isinstance(value, bytes) else str(value)

    return DeadLetter(
        id=prefix + (entry_id.decode() if isinstance(entry_id, bytes) else entry_id),
        reason=s("reason"),
        source=s("source"),
        payload=json.loads(s("payload") or "null"),
        details=json.loads(s("details") or "{}"),
        contact=s("contact"),
        attempts=int(s("attempts") or 0),
        last_error=s("last_error"),
        request_id=s("request_id"),
        created_at=float(s("created_at") or 0),
        truncated=s("truncated") == "1",
    )


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str, separators=(",", ":"))
    except (RecursionError, ValueError):  # nested too deep, or a circular structure
        return json.dumps("<unserializable payload>")


def _capped(text: str, limit: int) -> tuple[str, bool]:
    """`text` (JSON) when it fits in `limit` bytes, else a marked stand-in with its head."""
    size = len(text.encode("utf-8"))
    if size <= limit:
        return text, False
    head = text.encode("utf-8")[: max(0, limit - 200)].decode("utf-8", "ignore")
    return _json({"truncated": True, "bytes": size, "head": head}), True


def _split(entry_id: str) -> tuple[str, str]:
    """(stream, stream id) of a letter id."""
    if entry_id.startswith(INVALID_PREFIX):
        return INVALID_STREAM, entry_id[len(INVALID_PREFIX) :]
    return STREAM, entry_id


class DeadLetters:
    """Append, read and remove dead letters in the `lls:dlq` and `lls:dlq:invalid` streams."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        max_letter_bytes: int = DEFAULT_MAX_LETTER_BYTES,
        invalid_maxlen: int = DEFAULT_INVALID_MAXLEN,
    ) -> None:
        self.redis = client
        self.max_letter_bytes = max_letter_bytes
        self.invalid_maxlen = invalid_maxlen
        self._add_capped = client.register_script(_ADD_CAPPED)

    def fields(
        self,
        reason: str,
        *,
        source: str,
        payload: Any,
        details: dict[str, Any] | None = None,
        contact: str = "",
        attempts: int = 0,
        last_error: str = "",
        request_id: str = "",
    ) -> dict[str, str]:
        """The stream fields for one entry (used directly when pipelining many adds).

        Letters of an INVALID_REASONS reason have their payload and details capped."""
        payload_text, details_text, truncated = _json(payload), _json(details or {}), False
        if reason in INVALID_REASONS:
            payload_text, truncated = _capped(payload_text, self.max_letter_bytes)
            details_text, _ = _capped(details_text, 4096)
        fields = {
            "reason": reason,
            "source": source,
            "payload": payload_text,
            "details": details_text,
            "contact": contact,
            "attempts": str(attempts),
            "last_error": last_error,
            "request_id": request_id,
            "created_at": f"{time.time():.3f}",
        }
        if truncated:
            fields["truncated"] = "1"
        return fields

    def add_on(self, pipe: Any, fields: dict[str, str]) -> None:
        """Queue one letter (from `fields()`) on `pipe`: capped stream for invalid input.

        For an invalid-input letter the pipeline's result at this position is the number
        of older letters trimmed to keep DLQ_INVALID_MAXLEN (see `trimmed_warning`)."""
        if fields["reason"] in INVALID_REASONS:
            flat = [part for pair in fields.items() for part in pair]
            self._add_capped(
                keys=[INVALID_STREAM, COUNTERS_KEY],
                args=[
                    self.invalid_maxlen,
                    Metrics.field("dead_letters_trimmed", reason=fields["reason"]),
                    *flat,
                ],
                client=pipe,
            )
        else:
            pipe.xadd(STREAM, fields)

    def add(self, reason: str, *, source: str, payload: Any, **kw: Any) -> str:
        """Store one dead letter; returns its id."""
        fields = self.fields(reason, source=source, payload=payload, **kw)
        if reason in INVALID_REASONS:
            pipe = self.redis.pipeline(transaction=True)
            self.add_on(pipe, fields)
            pipe.xrevrange(INVALID_STREAM, count=1)
            trimmed, rows = pipe.execute()
            warn_trimmed(int(trimmed))
            return _decode(rows[0][0], rows[0][1], INVALID_PREFIX).id
        entry_id = self.redis.xadd(STREAM, fields)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def get(self, entry_id: str) -> DeadLetter | None:
        stream, sid = _split(entry_id)
        try:
            rows = self.redis.xrange(stream, min=sid, max=sid, count=1)
        except redis.ResponseError:  # not a stream id
            return None
        prefix = INVALID_PREFIX if stream == INVALID_STREAM else ""
        return _decode(rows[0][0], rows[0][1], prefix) if rows else None

    def _iter_stream(self, stream: str, prefix: str, batch: int) -> Iterator[DeadLetter]:
        start = "-"
        while True:
            rows = self.redis.xrange(stream, min=start, max="+", count=batch)
            if not rows:
                return
            for entry_id, raw in rows:
                yield _decode(entry_id, raw, prefix)
            last = rows[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    def iter(self, reason: str | None = None, batch: int = 500) -> Iterator[DeadLetter]:
        """All entries of both streams, oldest first, optionally only one reason."""
        merged = heapq.merge(
            self._iter_stream(STREAM, "", batch),
            self._iter_stream(INVALID_STREAM, INVALID_PREFIX, batch),
            key=lambda letter: letter.created_ms,
        )
        for letter in merged:
            if reason is None or letter.reason == reason:
                yield letter

    def count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(STREAM)
        pipe.xlen(INVALID_STREAM)
        return sum(int(n) for n in pipe.execute())

    def delete(self, *entry_ids: str) -> int:
        by_stream: dict[str, list[str]] = {}
        for entry_id in entry_ids:
            stream, sid = _split(entry_id)
            by_stream.setdefault(stream, []).append(sid)
        return sum(int(self.redis.xdel(stream, *ids)) for stream, ids in by_stream.items())

    def purge_older_than(self, seconds: float) -> int:
        """Delete entries created more than `seconds` ago; returns how many."""
        cutoff_ms = int((time.time() - seconds) * 1000)
        ids = [d.id for d in self.iter() if d.created_ms < cutoff_ms]
        removed = 0
        for i in range(0, len(ids), 500):
            removed += self.delete(*ids[i : i + 500])
        return removed


_last_warning = 0.0


def warn_trimmed(trimmed: int, *, every_seconds: float = 60.0) -> None:
    """Log a WARNING (at most once a minute per process) when invalid letters were trimmed."""
    global _last_warning
    now = time.monotonic()
    if trimmed > 0 and now - _last_warning >= every_seconds:
        _last_warning = now
        log.warning(
            "dead-letter stream %s is full: oldest invalid-input letters trimmed "
            "(leadlex_sync_dead_letters_trimmed_total; raise DLQ_INVALID_MAXLEN or run dlq purge)",
            INVALID_STREAM,
            extra={"trimmed": trimmed},
        )
