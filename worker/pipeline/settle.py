"""Settle a write of unknown outcome before anything else is sent for that contact.

The rule (docs/architecture.md, "Notes exactly once or surfaced"):
- nothing is decided before `sent_at + LEADLEX_TIMEOUT_SECONDS + NOTES_SETTLE_DELAY_SECONDS`
  (a late apply may still land until then); the contact is parked until that time;
- LEADLEX_PATCH_IDEMPOTENCY=honored: the write is sent again with the same key at once;
- a write without notes: its fields are marked unknown and sent again from the stage;
- a write with notes: one GET. `updated_date` equal to the fresh baseline read just before
  the write -> not applied -> sent again with the same Idempotency-Key (or dead-lettered
  `max_age` when it is too old). Changed -> applied only when LeadLex shows our text
  (notes visible in GET) or had answered 2xx; otherwise it cannot be told from somebody
  else's edit -> the note goes to the dead-letter store as `notes_uncertain` (the text
  kept), its plain fields are marked unknown and sent again without it.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.leadlex import ContactNotFoundError, LeadLexError
from worker.pipeline.failures import (
    intent_items,
    notes_uncertain_letter,
    plain_fields,
    staged_letter,
)
from worker.pipeline.runtime import FlushOutcome, Runtime, observe_error, park, settle_due
from worker.pipeline.send import send
from worker.state import Letter, Staged

log = logging.getLogger("leadlex_sync.worker")


def settle_intent(
    rt: Runtime, contact: str, token: int, intent: dict[str, Any]
) -> FlushOutcome | None:
    """Decide what became of a write whose outcome is unknown.

    Returns a FlushOutcome to stop this flush (parked, re-sent, fenced), or None when the
    intent is resolved and the flush may go on with what is staged."""
    now = rt.clock()
    if rt.settings.leadlex_patch_idempotency == "honored":
        return _resend(rt, contact, token, intent, str(intent.get("baseline") or ""))
    due = settle_due(rt, intent)
    if now < due:
        park(rt, contact, due, "settle")
        return FlushOutcome("settle_wait", sorted(intent.get("body", {})))
    if not intent.get("notes"):
        return _resolve(rt, contact, token, intent, forget=plain_fields(intent), failed=True)
    grant = rt.budget.acquire()
    if not grant.ok:
        park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"))
    try:
        resp = rt.client.get_contact(contact)
    except ContactNotFoundError as err:
        observe_error(rt, err)
        # Gone from LeadLex: nothing more can land. The next PATCH meets the same 404 and
        # dead-letters what is staged (the note's text included).
        return _resolve(rt, contact, token, intent)
    except LeadLexError as err:
        observe_error(rt, err)
        park(rt, contact, rt.clock() + 2, "verify")
        return FlushOutcome("verify_failed", status=err.status, request_id=err.request_id)
    rt.budget.observe(resp.rate)
    data = resp.data or {}
    updated = str(data.get("updated_date") or "")
    verdict = _verdict(intent, data, updated)
    if verdict == "applied":
        return _resolve(rt, contact, token, intent, intent_items(intent), updated_date=updated)
    if verdict == "not_applied":
        n, first = rt.state.attempts(contact)
        if first and now - first > rt.settings.max_retry_age_seconds:
            staged = rt.state.read_stage(contact)
            letters = [
                staged_letter(rt, contact, s, "max_age", None, {"attempts": n}) for s in staged
            ]
            out = _resolve(rt, contact, token, intent, [(s, "d") for s in staged], letters=letters)
            return out or FlushOutcome("dead_lettered")
        return _resend(rt, contact, token, intent, updated)
    log.warning(
        "notes write of unknown outcome surfaced as notes_uncertain (contact changed since)",
        extra={"contact": contact, "leadlex_request_id": resp.request_id},
    )
    letter = notes_uncertain_letter(
        rt,
        contact,
        intent,
        "LeadLex's updated_date changed since the baseline read just before the write, "
        "and notes cannot be read back: applied, or edited by somebody else",
        resp.request_id,
    )
    notes_only = [(s, kind) for s, kind in intent_items(intent) if kind == "n"]
    return _resolve(
        rt, contact, token, intent, notes_only, forget=plain_fields(intent), letters=[letter]
    )


def _verdict(intent: dict[str, Any], data: dict[str, Any], updated: str) -> str:
    """applied, not_applied or uncertain, from a GET taken after the settle delay."""
    text = str(intent.get("notes") or "")
    notes = data.get("notes")
    if isinstance(notes, str):  # notes visible (not documented by LeadLex): exact evidence
        return "applied" if notes.endswith(text) or f"{text}\n" in notes else "not_applied"
    baseline = str(intent.get("baseline") or "")
    if updated and baseline and updated == baseline:
        return "not_applied"
    if updated and baseline and intent.get("answered"):
        return "applied"  # LeadLex answered 2xx, and the contact changed since the baseline
    return "uncertain"


def _resolve(
    rt: Runtime,
    contact: str,
    token: int,
    intent: dict[str, Any],
    items: list[tuple[Staged, str]] | None = None,
    *,
    updated_date: str = "",
    forget: list[str] | None = None,
    letters: list[Letter] | None = None,
    failed: bool = False,
) -> FlushOutcome | None:
    """Remove the intent with its outcome in one fenced step; None = go on flushing.
    `failed`: the write did not land (the failure count is kept for MAX_RETRY_AGE)."""
    left = rt.state.commit(
        contact,
        items or [],
        token=token,
        intent_key=str(intent["key"]),
        updated_date=updated_date,
        forget=forget or [],
        letters=letters or [],
        reset_attempts=not failed,
    )
    if left is None:
        rt.metrics.incr("flushes_fenced")
        return FlushOutcome("fenced")
    return None


def _resend(
    rt: Runtime, contact: str, token: int, intent: dict[str, Any], baseline: str
) -> FlushOutcome:
    """Send the same write again with the same Idempotency-Key and the baseline just read."""
    grant = rt.budget.acquire()
    if not grant.ok:
        park(rt, contact, grant.retry_at, grant.reason or "budget")
        return FlushOutcome("parked_" + (grant.reason or "budget"), sorted(intent["body"]))
    again = {**intent, "baseline": baseline, "sent_at": rt.clock(), "token": token}
    again.pop("answered", None)
    again["attempt"] = int(intent.get("attempt", 1)) + 1
    return send(rt, contact, token, again, grant)
