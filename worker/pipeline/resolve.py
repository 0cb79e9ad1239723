"""Resolution: find (or create) the LeadLex contact a CRM record is linked to."""

from __future__ import annotations

from worker.events import ChangeEvent
from worker.mapping import map_record
from worker.pipeline.runtime import Runtime, budgeted_call


def resolve(rt: Runtime, event: ChangeEvent, id_hint: str | None, email: str | None) -> str | None:
    """Find the LeadLex contact: link store, mapped id field, email lookup, create."""
    st = rt.state
    contact = st.resolve_link(event.source, event.account, event.object_id)
    if contact:
        return contact
    if id_hint:
        st.set_links([(event.source, event.account, event.object_id, id_hint)])
        return id_hint
    if rt.settings.resolve_by_email and email and not rt.circuit.state().open:
        contact = _lookup_by_email(rt, email)
        if contact:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            return contact
    if rt.settings.create_on_creation and event.kind == "create" and not rt.circuit.state().open:
        contact = _create_contact(rt, event)
        if contact:
            st.set_links([(event.source, event.account, event.object_id, contact)])
            return contact
    return None


def _lookup_by_email(rt: Runtime, email: str) -> str | None:
    """GET /v1/contacts?search=email; accept only one exact email match (costs one call)."""
    resp = budgeted_call(rt, lambda c: c.search_contacts(email))
    if resp is None:
        return None
    rows = (resp.data or {}).get("contacts") or []
    exact = [r for r in rows if str(r.get("email", "")).lower() == email.lower()]
    return str(exact[0]["id"]) if len(exact) == 1 else None


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
