"""Resolution: find (or create) the LeadLex contact a CRM record is linked to."""

from __future__ import annotations

from worker.events import ChangeEvent
from worker.leadlex import LeadLexError, RateLimitedError
from worker.mapping import map_record
from worker.pipeline.linking import link_records
from worker.pipeline.runtime import Runtime, budgeted_call, observe_error


def resolve(
    rt: Runtime, event: ChangeEvent, id_hint: str | None, email: str | None
) -> tuple[str | None, float | None]:
    """Find the LeadLex contact: link store, mapped id field, email lookup, create.

    Returns (contact, None) when linked (every new link goes through `link_records`, which
    replays the record's parked events), (None, retry_at) when a lookup could not run now
    (no budget, circuit open, a LeadLex error: the parked event is retried then), and
    (None, None) when nothing was found."""
    st = rt.state
    contact = st.resolve_link(event.source, event.account, event.object_id)
    if contact:
        return contact, None
    if id_hint:
        link_records(rt, [(event.source, event.account, event.object_id, id_hint)])
        return id_hint, None
    retry_at: float | None = None
    if rt.settings.resolve_by_email and email:
        contact, retry_at = _lookup_by_email(rt, email)
        if contact:
            link_records(rt, [(event.source, event.account, event.object_id, contact)])
            return contact, None
    if rt.settings.create_on_creation and event.kind == "create" and not rt.circuit.state().open:
        contact = _create_contact(rt, event)
        if contact:
            link_records(rt, [(event.source, event.account, event.object_id, contact)])
            return contact, None
    return None, retry_at


# A lookup that failed for a reason that passes (LeadLex error) is tried again this much later.
LOOKUP_RETRY_SECONDS = 30.0


def _lookup_by_email(rt: Runtime, email: str) -> tuple[str | None, float | None]:
    """GET /v1/contacts?search=email; accept only one exact email match (costs one call).

    Returns (contact, None), (None, None) when there is no single exact match, or (None,
    retry_at) when the lookup could not be made now (budget, circuit, LeadLex error)."""
    circuit = rt.circuit.state()
    if circuit.open:
        return None, max(circuit.next_probe_at, rt.clock() + LOOKUP_RETRY_SECONDS)
    grant = rt.budget.acquire()
    if not grant.ok:
        return None, grant.retry_at
    try:
        resp = rt.client.search_contacts(email)
    except LeadLexError as err:
        observe_error(rt, err)
        if isinstance(err, RateLimitedError):  # everyone pauses: retry when the pause ends
            return None, max(rt.budget.paused_until()[0], rt.clock() + 1)
        if err.retryable or getattr(err, "opens_circuit", False):
            return None, rt.clock() + LOOKUP_RETRY_SECONDS
        return None, None
    rt.budget.observe(resp.rate)
    rows = (resp.data or {}).get("contacts") or []
    exact = [r for r in rows if str(r.get("email", "")).lower() == email.lower()]
    return (str(exact[0]["id"]) if len(exact) == 1 else None), None


def _create_contact(rt: Runtime, event: ChangeEvent) -> str | None:
    """POST /v1/contacts from the record's mapped fields (opt-in: CREATE_ON_CREATION)."""
    snapshot = rt.state.snapshot(event.record_key)
    result = map_record(rt.mapping, event.source, event.object_type, snapshot, list(snapshot))
    body = {k: v.value for k, v in result.fields.items()}
    if "company_name" in body:  # create spells it `company` (reference §6, §12.10)
        body["company"] = body.pop("company_name")
    resp = budgeted_call(rt, lambda c: c.create_contact(body)) if body else None
    if resp is None:
        return None
    cid = (resp.data or {}).get("id")
    return str(cid) if cid else None
