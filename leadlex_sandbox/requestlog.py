"""Request ids (`req_` + a 26-character ULID) and the log of every API request.

The log is what tests of the product read (`GET /_sandbox/requests`) to count
calls, see bodies and check which writes were applied or dropped. Control
endpoints are not logged.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80


def _base32(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class RequestIds:
    """Monotonic ULIDs: 48-bit milliseconds + 80 random bits, incremented within a millisecond."""

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        """A fresh id like req_01HY1K0E7V8Q0YXH7DSTX5B3CA (the caller holds the lock)."""
        ms = int(time.time() * 1000)
        if ms <= self._last_ms:
            ms = self._last_ms
            random = (self._last_random + 1) % (1 << _RANDOM_BITS)
        else:
            random = secrets.randbits(_RANDOM_BITS)
        self._last_ms, self._last_random = ms, random
        return "req_" + _base32(ms, 10) + _base32(random, 16)


@dataclass
class LogEntry:
    """One API request as the sandbox saw and answered it."""

    seq: int
    ts: float  # epoch seconds at arrival
    method: str
    path: str  # relative to the API base, e.g. /v1/contacts/{id}
    query: str
    contact_id: str | None
    body: Any  # parsed JSON, None when absent or not JSON
    request_id: str
    idempotency_key: str | None
    status: int = 0
    applied: bool = False  # a write changed the store (not a replay, not an injected 5xx)
    dropped: bool = False  # the connection was closed without an answer
    replayed: bool = False  # answered from the Idempotency-Key cache
    late: bool = False  # applied late_apply_seconds after arrival (see gateway.py)
    applied_at: float | None = None  # when a late write was applied
    non_json: bool = False  # answered 200 with a body that is not JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped entry."""
        return asdict(self)


class RequestLog:
    """Entries in arrival order with increasing `seq`."""

    def __init__(self) -> None:
        self._entries: list[LogEntry] = []
        self._seq = 0

    def clear(self) -> None:
        """Forget every entry; seq starts again at 1."""
        self._entries.clear()
        self._seq = 0

    def open(self, **fields: Any) -> LogEntry:
        """Append an entry for a request that just arrived; the caller fills in the outcome."""
        self._seq += 1
        entry = LogEntry(seq=self._seq, **fields)
        self._entries.append(entry)
        return entry

    def entries(self, since: int = 0, contact_id: str | None = None) -> list[LogEntry]:
        """Entries with seq > since, optionally for one contact."""
        return [
            e
            for e in self._entries
            if e.seq > since and (contact_id is None or e.contact_id == contact_id)
        ]
