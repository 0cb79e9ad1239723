"""Replay dead letters through the normal pipeline (dedupe, ordering, budget).

A `notes_uncertain` letter (a note LeadLex may or may not hold) is replayed by staging its
exact text for its contact as `notes|dlq:{letter id}`: the next flush appends it verbatim,
once (the text is then recorded under that name, so a second replay appends nothing).
"""

from __future__ import annotations

import time
from typing import Any

from worker.deadletter import DeadLetter
from worker.events import KINDS, ChangeEvent, fingerprint
from worker.state import NOTES_PREFIX

NOTES_UNCERTAIN = "notes_uncertain"


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
        if letter.reason == NOTES_UNCERTAIN:
            if replay_note(rt, letter):
                rt.dlq.delete(letter.id)
                done += 1
            else:
                skipped += 1
            continue
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


def replay_note(rt: Any, letter: DeadLetter) -> bool:
    """Stage a `notes_uncertain` letter's text for its contact (appended once); False when
    the letter holds no text or no contact."""
    data: Any = letter.payload
    text = str(data.get("leadlex_value") or "") if isinstance(data, dict) else ""
    if not text.strip() or not letter.contact:
        return False
    now_ms = int(time.time() * 1000)
    record = f"dlq:{letter.id}"
    origin = {"r": record, "t": "contact", "o": now_ms, "c": {}}
    rt.state.stage(
        letter.contact,
        [(NOTES_PREFIX + record, text, now_ms, origin)],
        due_at=0,
        fp=None,
        seen_ttl=1,
    )
    rt.dispatch_flush(letter.contact, 0)
    return True
