"""The dead-letter store: a Redis stream of what could not be delivered, with why.

Each entry keeps the reason (a short code such as `invalid_event`, `invalid_value`,
`validation_error`, `not_found`, `unlinked_expired`, `max_age`, `notes_uncertain`: a
note LeadLex may or may not hold, its exact text in `payload.leadlex_value`,
`create_uncertain`: a contact create whose outcome could not be told), the source, a JSON
payload (the raw event or the ChangeEvent dict, or the staged fields), details (field,
problem, LeadLex's `details.fields`), attempts, the last LeadLex error and its
`X-Request-ID`. Nothing is ever trimmed automatically; `dlq purge` removes old entries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

STREAM = "lls:dlq"


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

    @property
    def created_ms(self) -> int:
        return int(self.id.split("-", 1)[0])

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
            "details": self.details,
            "payload": self.payload,
        }


def _decode(entry_id: bytes | str, raw: dict[Any, Any]) -> DeadLetter:
    def s(key: str) -> str:
        value = raw.get(key.encode(), raw.get(key, b""))
        return value.decode() if isinstance(value, bytes) else str(value)

    return DeadLetter(
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        reason=s("reason"),
        source=s("source"),
        payload=json.loads(s("payload") or "null"),
        details=json.loads(s("details") or "{}"),
        contact=s("contact"),
        attempts=int(s("attempts") or 0),
        last_error=s("last_error"),
        request_id=s("request_id"),
        created_at=float(s("created_at") or 0),
    )


class DeadLetters:
    """Append, read and remove dead letters in the `lls:dlq` stream."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

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
        """The stream fields for one entry (used directly when pipelining many adds)."""
        return {
            "reason": reason,
            "source": source,
            "payload": json.dumps(payload, default=str, separators=(",", ":")),
            "details": json.dumps(details or {}, default=str, separators=(",", ":")),
            "contact": contact,
            "attempts": str(attempts),
            "last_error": last_error,
            "request_id": request_id,
            "created_at": f"{time.time():.3f}",
        }

    def add(self, reason: str, *, source: str, payload: Any, **kw: Any) -> str:
        """Store one dead letter; returns its stream id."""
        fields = self.fields(reason, source=source, payload=payload, **kw)
        entry_id = self.redis.xadd(STREAM, fields)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def get(self, entry_id: str) -> DeadLetter | None:
        rows = self.redis.xrange(STREAM, min=entry_id, max=entry_id, count=1)
        return _decode(*rows[0]) if rows else None

    def iter(self, reason: str | None = None, batch: int = 500) -> Iterator[DeadLetter]:
        """All entries oldest first, optionally only one reason."""
        start = "-"
        while True:
            rows = self.redis.xrange(STREAM, min=start, max="+", count=batch)
            if not rows:
                return
            for entry_id, raw in rows:
                letter = _decode(entry_id, raw)
                if reason is None or letter.reason == reason:
                    yield letter
            last = rows[-1][0]
            start = "(" + (last.decode() if isinstance(last, bytes) else last)

    def count(self) -> int:
        return int(self.redis.xlen(STREAM))

    def delete(self, *entry_ids: str) -> int:
        return int(self.redis.xdel(STREAM, *entry_ids)) if entry_ids else 0

    def purge_older_than(self, seconds: float) -> int:
        """Delete entries created more than `seconds` ago; returns how many."""
        cutoff_ms = int((time.time() - seconds) * 1000)
        ids = [d.id for d in self.iter() if d.created_ms < cutoff_ms]
        removed = 0
        for i in range(0, len(ids), 500):
            removed += self.delete(*ids[i : i + 500])
        return removed
