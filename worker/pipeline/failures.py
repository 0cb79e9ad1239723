"""What a failed call does: park, back off, drop a stale link, dead-letter, or keep the
write of unknown outcome for its settle (never dropped unsettled)."""

from __future__ import annotations

import random
from typing import Any

from worker.leadlex import (
    ContactNotFoundError,
    LeadLexError,
    LeadLexValidationError,
    RateLimitedError,
)
from worker.metrics import Metrics
from worker.pipeline.runtime import (
    FlushOutcome,
    Runtime,
    flush_lease_seconds,
    observe_error,
    park,
    settle_due,
)
from worker.state import NOTES_PREFIX, Letter, Staged

BACKOFF_BASE = 2.0
BACKOFF_CAP = 900.0


def backoff(n: int) -> float:
    """Full-jitter exponential backoff after the n-th transient failure."""
    return max(0.2, random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(n, 20)))))


def on_error(
    rt: Runtime,
    contact: str,
    token: int,
    err: LeadLexError,
    intent: dict[str, Any] | None,
    staged: list[Staged],
) -> FlushOutcome:
    """Handle a failed call of a flush. `intent` is the write that failed (None: a read).

    A write that may have been applied (5xx, no answer after sending, a 2xx we cannot read)
    keeps its intent: the next flush settles it once a late apply can no longer land, and
    only then may anything be dead-lettered or sent again. Any other failure means this
    attempt changed nothing in LeadLex, so its intent is resolved in the same fenced step
    as the rest of the outcome."""
    st = rt.state
    now = rt.clock()
    observe_error(rt, err)
    fields = sorted(intent["body"]) if intent else []
    base = FlushOutcome("error", fields, err.status, err.request_id)
    key = str(intent["key"]) if intent else ""
    items = intent_items(intent) if intent else []

    if intent is not None and err.maybe_applied:
        return _unknown_outcome(rt, contact, token, err, intent, base)

    def commit(
        drop: list[tuple[Staged, str]], letters: list[Letter], outcome: str, *, failed: bool = False
    ) -> FlushOutcome:
        left = st.commit(
            contact, drop, token=token, intent_key=key, letters=letters, reset_attempts=not failed
        )
        base.outcome = "fenced" if left is None else outcome
        return base

    if isinstance(err, RateLimitedError):
        until, _reason = rt.budget.paused_until()
        park(rt, contact, max(until, now + 1), "rate_limited")
        return commit([], [], "rate_limited", failed=True)
    if getattr(err, "opens_circuit", False):
        park(rt, contact, now + 5, "circuit")
        return commit([], [], "circuit_open", failed=True)
    if isinstance(err, LeadLexValidationError):
        bad = set(err.field_errors)
        dropped = [
            (s, "d")
            for s, _k in items
            if s.field in bad or ("notes" in bad and s.field.startswith(NOTES_PREFIX))
        ]
        if not dropped:  # LeadLex named nothing we sent: the whole request is bad
            dropped = [(s, "d") for s, _k in items]
        by_field = {s.field: s for s in staged}
        letters = []
        for s, _ in dropped:
            name = "notes" if s.field.startswith(NOTES_PREFIX) else s.field
            full = by_field.get(s.field, s)
            letters.append(
                staged_letter(
                    rt,
                    contact,
                    full,
                    "validation_error",
                    err,
                    {"field": name, "leadlex": err.field_errors.get(name, err.message)},
                )
            )
        out = commit(dropped, letters, "validation_error")
        if out.outcome != "fenced" and len(dropped) < len(items):
            rt.dispatch_flush(contact, 0)
        return out
    if isinstance(err, ContactNotFoundError):
        removed = st.remove_links_to(contact)
        letters = [
            staged_letter(rt, contact, s, "not_found", err, {"unlinked": removed}) for s in staged
        ]
        return commit([(s, "d") for s in staged], letters, "not_found")
    if err.retryable:
        n, first = st.record_failure(contact, now)
        if now - first > rt.settings.max_retry_age_seconds:
            letters = [
                staged_letter(rt, contact, s, "max_age", err, {"attempts": n}) for s in staged
            ]
            return commit([(s, "d") for s in staged], letters, "dead_lettered")
        park(rt, contact, now + backoff(n), "backoff")
        return commit([], [], "retry", failed=True)
    letters = [staged_letter(rt, contact, s, err.code or "leadlex_error", err, {}) for s in staged]
    return commit([(s, "d") for s in staged], letters, "dead_lettered")


def _unknown_outcome(
    rt: Runtime,
    contact: str,
    token: int,
    err: LeadLexError,
    intent: dict[str, Any],
    base: FlushOutcome,
) -> FlushOutcome:
    """Keep the intent; settle it once a late apply can no longer land (or, with honoured
    idempotency, send it again with the same key after a backoff)."""
    st = rt.state
    now = rt.clock()
    n, _first = st.record_failure(contact, now)
    if err.status is not None and 200 <= err.status < 300:
        # LeadLex said 2xx (with a body we cannot read): keep that as evidence for the settle.
        st.arm(contact, token, {**intent, "answered": err.status}, flush_lease_seconds(rt))
    if rt.settings.leadlex_patch_idempotency == "honored":
        until = now + backoff(n)
    else:
        until = max(settle_due(rt, intent), now + 0.2)
    park(rt, contact, until, "settle")
    base.outcome = "unknown_outcome"
    return base


def intent_items(intent: dict[str, Any]) -> list[tuple[Staged, str]]:
    """The staged entries a write carried, exactly as read when it was built."""
    return [(Staged.parse(field, raw), kind) for field, raw, kind in intent.get("items", [])]


def plain_fields(intent: dict[str, Any]) -> list[str]:
    """The plain (overwrite) fields a write sent."""
    return [f for f in intent.get("body", {}) if f != "notes"]


def staged_letter(
    rt: Runtime,
    contact: str,
    s: Staged,
    reason: str,
    err: LeadLexError | None,
    details: dict[str, Any],
) -> Letter:
    """A dead letter for one staged value (replayable as the CRM event it came from)."""
    record = str(s.origin.get("r", "::"))
    source, account, object_id = ([*record.split(":", 2), "", ""])[:3]
    payload = {
        "source": source,
        "account": account,
        "object_type": s.origin.get("t", "contact"),
        "object_id": object_id,
        "kind": "update",
        "occurred_at_ms": s.ts_ms,
        "seq": s.seq,
        "fingerprint": "",
        "changes": s.origin.get("c", {}),
        "leadlex_field": "notes" if s.field.startswith(NOTES_PREFIX) else s.field,
        "leadlex_value": s.value,
    }
    fields = rt.dlq.fields(
        reason,
        source=source,
        payload=payload,
        details=details,
        contact=contact,
        attempts=rt.state.attempts(contact)[0],
        last_error=str(err) if err else "",
        request_id=err.request_id if err else "",
    )
    return Letter(fields, (Metrics.field("dead_lettered", reason=reason),))


def notes_uncertain_letter(
    rt: Runtime, contact: str, intent: dict[str, Any], why: str, request_id: str = ""
) -> Letter:
    """The dead letter of a notes write whose outcome cannot be known: the exact text that
    was sent, for `dlq replay` (append it) or `dlq drop` (it is there). One per write."""
    records = sorted(
        {s.field[len(NOTES_PREFIX) :] for s, kind in intent_items(intent) if kind == "n"}
    )
    source = records[0].split(":", 1)[0] if records else ""
    payload = {
        "kind": "notes",
        "contact": contact,
        "leadlex_field": "notes",
        "leadlex_value": str(intent.get("notes", "")),
        "records": records,
        "idempotency_key": str(intent["key"]),
    }
    fields = rt.dlq.fields(
        "notes_uncertain",
        source=source,
        payload=payload,
        details={
            "why": why,
            "idempotency_key": str(intent["key"]),
            "sent_at": intent.get("sent_at"),
            "baseline_updated_date": intent.get("baseline", ""),
        },
        contact=contact,
        attempts=rt.state.attempts(contact)[0],
        request_id=request_id,
    )
    counters = (
        Metrics.field("dead_lettered", reason="notes_uncertain"),
        Metrics.field("notes_uncertain"),
    )
    return Letter(fields, counters, once=f"lls:surfaced:{intent['key']}")
