"""Idempotency-Key replay for PATCH and POST /v1/contacts, only when `honor_idempotency_key`.

LeadLex documents the header for other writes (24 h, original answer replayed)
but not for PATCH or POST /v1/contacts (reference §5, §12.1), so the default is to
ignore it. When honoured: only applied (2xx) answers are saved; the same key with the
same method, path and body replays the saved answer without applying again; the
same key with a different request answers `idempotency_conflict_status`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SavedAnswer:
    """An answer kept for replay."""

    fingerprint: str
    status: int
    body: dict[str, Any]
    expires: float


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of what makes two requests "the same" for idempotency."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyCache:
    """Saved answers by key, each until its expiry."""

    def __init__(self) -> None:
        self._saved: dict[str, SavedAnswer] = {}

    def clear(self) -> None:
        """Forget every saved answer."""
        self._saved.clear()

    def get(self, key: str, now: float) -> SavedAnswer | None:
        """The live answer saved under `key`, or None."""
        saved = self._saved.get(key)
        if saved is not None and saved.expires <= now:
            del self._saved[key]
            return None
        return saved

    def save(self, key: str, answer: SavedAnswer) -> None:
        """Keep an answer for replay."""
        self._saved[key] = answer
