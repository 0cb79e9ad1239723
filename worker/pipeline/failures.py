"""What a failed PATCH does: park, back off, drop a stale link, or dead-letter."""

from __future__ import annotations

import random
from typing import Any

from worker.leadlex import (
    ContactNotFoundError,
    LeadLexError,
    LeadLexValidationError,
    RateLimitedError,
)
from worker.pipeline.runtime import FlushOutcome, Runtime, observe_error, park
from worker.state import NOTES_PREFIX, Staged

BACKOFF_BASE = 2.0
BACKOFF_CAP = 900.0


def on_error(
    rt: Runtime,
    contact: str,
    err: LeadLexError,
    staged: list[Staged],
    items: list[tuple[Staged, str]],
    fields: list[str],
) -> FlushOutcome:
    st = rt.state
    now = rt.clock()
    observe_error(rt, err)
    base = FlushOutcome("error", fields, err.status, err.request_id)
    if not err.maybe_applied:
        st.clear_intent(contact)

    if isinstance(err, RateLimitedError):
        until, _reason = rt.budget.paused_until()
        park(rt, contact, max(until, now + 1), "rate_limited")
        base.outcome = "rate_limited"
        return base
    if getattr(err, "opens_circuit", False):
        park(rt, contact, now + 5, "circuit")
        base.outcome = "circuit_open"
        return base
    if isinstance(err, LeadLexValidationError):
        bad = set(err.field_errors)
        dropped = [
            (s, "d")
            for s, _k in items
            if s.field in bad or ("notes" in bad and s.field.startswith(NOTES_PREFIX))
        ]
        if not dropped:  # LeadLex named nothing we sent: the whole request is bad
            dropped = [(s, "d") for s, _k in items]
        for s, _ in dropped:
            name = "notes" if s.field.startswith(NOTES_PREFIX) else s.field
            dead_letter_staged(
                rt,
                contact,
                s,
                "validation_error",
                err,
                {"field": name, "leadlex": err.field_errors.get(name, err.message)},
            )
        st.commit(contact, dropped)
        if len(dropped) < len(items):
            rt.dispatch_flush(contact, 0)
        base.outcome = "validation_error"
        return base
    if isinstance(err, ContactNotFoundError):
        removed = st.remove_links_to(contact)
        for s in staged:
            dead_letter_staged(rt, contact, s, "not_found", err, {"unlinked": removed})
        st.commit(contact, [(s, "d") for s in staged])
        base.outcome = "not_found"
        return base
    if err.retryable:
        n, first = st.record_failure(contact, now)
        if now - first > rt.settings.max_retry_age_seconds:
            for s in staged:
                dead_letter_staged(rt, contact, s, "max_age", err, {"attempts": n})
            st.commit(contact, [(s, "d") for s in staged])
            base.outcome = "dead_lettered"
            return base
        delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2 ** min(n, 20))))
        park(rt, contact, now + max(0.2, delay), "backoff")
        base.outcome = "retry"
        return base
    for s in staged:
        dead_letter_staged(rt, contact, s, err.code or "leadlex_error", err, {})
    st.commit(contact, [(s, "d") for s in staged])
    base.outcome = "dead_lettered"
    return base


def dead_letter_staged(
    rt: Runtime,
    contact: str,
    s: Staged,
    reason: str,
    err: LeadLexError | None,
    details: dict[str, Any],
) -> None:
    record = str(s.origin.get("r", "::"))
    source, account, object_id = ([*record.split(":", 2), "", ""])[:3]
    payload = {
        "source": source,
        "account": account,
        "object_type": s.origin.get("t", "contact"),
        "object_id": object_id,
        "kind": "update",
        "occurred_at_ms": s.ts_ms,
        "fingerprint": "",
        "changes": s.origin.get("c", {}),
        "leadlex_field": "notes" if s.field.startswith(NOTES_PREFIX) else s.field,
        "leadlex_value": s.value,
    }
    rt.dlq.add(
        reason,
        source=source,
        payload=payload,
        details=details,
        contact=contact,
        attempts=rt.state.attempts(contact)[0],
        last_error=str(err) if err else "",
        request_id=err.request_id if err else "",
    )
    rt.metrics.incr("dead_lettered", reason=reason)
