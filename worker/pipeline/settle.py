"""Settle a PATCH of unknown outcome before anything else is sent for that contact."""

from __future__ import annotations

import logging
from typing import Any

from worker.leadlex import (
    ContactNotFoundError,
    LeadLexError,
)
from worker.pipeline.runtime import FlushOutcome, Runtime, observe_error, park
from worker.state import Staged

log = logging.getLogger("leadlex_sync.worker")


def settle_intent(rt: Runtime, contact: str, intent: dict[str, Any]) -> FlushOutcome | None:
    """A PATCH of unknown outcome is pending: decide whether it applied before sending more.

    Returns a FlushOutcome to stop this flush (parked), or None to continue normally."""
    st = rt.state
    if not intent.get("notes"):
        # Plain overwrites are safe to send again, but LeadLex may now hold them: forget what
        # we believed it holds, or a staged value equal to that belief would be skipped as a
        # no-op (and a stale updated_date would fool the next notes settle).
        st.forget_applied(contact, [f for f, _raw, kind in intent.get("items", []) if kind == "f"])
        st.clear_intent(contact)
        return None
    grant = rt.budget.acquire()
    if not grant.ok:
        park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"))
    try:
        resp = rt.client.get_contact(contact)
    except ContactNotFoundError:
        st.clear_intent(contact)
        return None  # the PATCH will meet the same 404 and be handled there
    except LeadLexError as err:
        observe_error(rt, err)
        park(rt, contact, rt.clock() + 2, "verify")
        return FlushOutcome("verify_failed", status=err.status, request_id=err.request_id)
    rt.budget.observe(resp.rate)
    data = resp.data or {}
    text = str(intent["notes"])
    notes = data.get("notes")
    if isinstance(notes, str):
        applied = notes.endswith(text) or f"{text}\n" in notes
        assumed = False
    else:
        updated = str(data.get("updated_date") or "")
        applied = bool(updated) and updated != str(intent.get("updated_before") or "")
        assumed = applied
    if not applied:
        st.clear_intent(contact)
        return None
    # Record exactly what was sent (the raw values in the intent), also for fields restaged
    # since: LeadLex holds the sent value and its notes end with the sent text. The commit
    # keeps a restaged (newer) value staged, so it goes with the next PATCH.
    items = [(Staged(field, "", 0, {}, raw), kind) for field, raw, kind in intent.get("items", [])]
    st.commit(contact, items, updated_date=str(data.get("updated_date") or ""))
    if assumed:
        log.warning(
            "notes append of unknown outcome taken as applied (contact changed since)",
            extra={"contact": contact, "leadlex_request_id": resp.request_id},
        )
        rt.metrics.incr("notes_assumed_applied")
    return None
