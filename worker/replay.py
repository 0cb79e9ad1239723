"""Replay dead letters through the normal pipeline (dedupe, ordering, budget)."""

from __future__ import annotations

from typing import Any

from worker.deadletter import DeadLetter
from worker.events import KINDS, ChangeEvent, fingerprint


def replay_event(letter: DeadLetter) -> ChangeEvent | None:
    """The ChangeEvent a dead letter can be replayed as, or None when it holds none.

    Receiver rejects (`invalid_event`) keep the raw CRM event, which failed validation
    and would fail again; they are not replayable. Replays get a fresh fingerprint
    (the original one is in the dedupe ledger) and keep the original CRM time, so a
    value that has since been superseded is still skipped as stale.
    """
    data: Any = letter.payload
    if not isinstance(data, dict):
        return None
    needed = ("source", "object_id", "occurred_at_ms")
    if any(k not in data for k in needed) or not data.get("changes"):
        return None
    if data.get("kind", "update") not in KINDS or data.get("source") not in {
        "hubspot",
        "salesforce",
        "generic",
    }:
        return None
    event = dict(data)
    event["kind"] = "update" if event.get("kind") not in ("update", "create") else event["kind"]
    event["fingerprint"] = fingerprint("dlq-replay", letter.id)
    event.setdefault("account", "")
    event.setdefault("object_type", "contact")
    try:
        return ChangeEvent.from_dict(event)
    except (TypeError, ValueError):
        return None


def replay_letters(rt: Any, letters: list[DeadLetter]) -> tuple[int, int]:
    """Enqueue every replayable letter and remove it from the store; returns (done, skipped)."""
    done = skipped = 0
    batch: list[dict[str, Any]] = []
    ids: list[str] = []
    for letter in letters:
        event = replay_event(letter)
        if event is None:
            skipped += 1
            continue
        batch.append(event.to_dict())
        ids.append(letter.id)
        if len(batch) == 100:
            rt.dispatch_ingest(batch)
            rt.dlq.delete(*ids)
            done += len(ids)
            batch, ids = [], []
    if batch:
        rt.dispatch_ingest(batch)
        rt.dlq.delete(*ids)
        done += len(ids)
    return done, skipped
