"""Handlers of the /v1/contacts endpoints; each takes a Call and returns a Result or raises.

They run under the sandbox lock after the gateway has authenticated, counted
and authorised the request (see gateway.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leadlex_sandbox.config import SandboxConfig
from leadlex_sandbox.errors import ApiError, not_found, validation_error
from leadlex_sandbox.idempotency import SavedAnswer, fingerprint
from leadlex_sandbox.state import SandboxState
from leadlex_sandbox.store import SORT_KEYS, Contact, parse_iso
from leadlex_sandbox.validation import parse_create, parse_patch, uuid_problem

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 50
INCLUDES: dict[str, str] = {"notes": "recent_notes", "tasks": "open_tasks", "deals": "open_deals"}


@dataclass(frozen=True)
class Call:
    """One authorised API request, as a handler sees it."""

    state: SandboxState
    config: SandboxConfig
    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    body_problem: str | None  # "Invalid JSON" and the like
    content_type: str | None
    contact_id: str | None
    idempotency_key: str | None
    now: float
    query_string: str = ""


@dataclass(frozen=True)
class Result:
    """A handler's answer."""

    status: int
    body: dict[str, Any]
    applied: bool = False
    replayed: bool = False
    raw: bytes | None = None  # a non-JSON body (the CSV export), sent instead of `body`
    content_type: str | None = None  # with `raw`
    headers: dict[str, str] | None = None  # extra answer headers


def list_contacts(call: Call) -> Result:
    """GET /v1/contacts: page, per_page (<= 100), search, sort, created_after, list_id."""
    errors: dict[str, str] = {}
    page = _positive_int(call.query, "page", 1, errors)
    per_page = _positive_int(call.query, "per_page", DEFAULT_PER_PAGE, errors)
    if per_page > MAX_PER_PAGE:
        errors["per_page"] = f"Must be between 1 and {MAX_PER_PAGE}"
    sort = call.query.get("sort", "created_at")
    if sort.lstrip("-") not in SORT_KEYS or sort.startswith("--"):
        errors["sort"] = "Must be one of created_at, updated_date, full_name (prefix - to reverse)"
    created_after = None
    if "created_after" in call.query:
        created_after = parse_iso(call.query["created_after"])
        if created_after is None:
            errors["created_after"] = "Must be an ISO 8601 timestamp"
    list_id = call.query.get("list_id")
    if list_id is not None and uuid_problem(list_id):
        errors["list_id"] = "Must be a UUID"
    if errors:
        raise validation_error(errors)
    if list_id is not None:
        raise not_found("List")  # the sandbox has no lists
    found = call.state.store.search(call.query.get("search"), sort, created_after)
    start = (page - 1) * per_page
    return Result(
        200,
        {
            "data": {"contacts": [c.list_view() for c in found[start : start + per_page]]},
            "meta": {"page": page, "per_page": per_page, "total": len(found)},
        },
    )


def get_contact(call: Call) -> Result:
    """GET /v1/contacts/{id} with optional include=notes,tasks,deals|*."""
    wanted = [p.strip() for p in call.query.get("include", "").split(",") if p.strip()]
    bad = [p for p in wanted if p != "*" and p not in INCLUDES]
    if bad:
        raise validation_error({"include": "Must be a comma list of notes, tasks, deals or *"})
    contact = _contact(call)
    view = contact.get_view(expose_notes=call.config.expose_notes)
    for name, field in INCLUDES.items():
        if name in wanted or "*" in wanted:
            view[field] = []  # notes/tasks/deals rows are not simulated
    return Result(200, {"data": view})


def create_contact(call: Call) -> Result:
    """POST /v1/contacts (reference §7.3); Idempotency-Key honoured when the knob says so."""
    _require_json(call)
    return _idempotent(call, _create)


def _create(call: Call) -> Result:
    fields = parse_create(call.body, call.config)
    store = call.state.store
    email = fields.get("email")
    existing = store.find_by_email(email) if email else None
    if existing is not None and call.config.duplicate_email == "reject":
        raise ApiError(
            409,
            "duplicate_contact",
            "A contact with this email already exists",
            {"fields": {"email": "Already used by another contact"}, "existing_id": existing.id},
        )
    contact = store.create(fields)
    return Result(call.config.create_status, {"data": contact.create_view()}, applied=True)


def update_contact(call: Call) -> Result:
    """PATCH /v1/contacts/{id} (reference §8): notes append, other fields overwrite."""
    _require_json(call)
    return _idempotent(call, _update)


def _update(call: Call) -> Result:
    config = call.config
    contact = _contact(call)
    changes = parse_patch(call.body, config)
    call.state.store.update(contact, changes, config.notes_separator)
    return Result(200, {"data": contact.patch_view(expose_notes=config.expose_notes)}, True)


def _idempotent(call: Call, apply: Callable[[Call], Result]) -> Result:
    """Run a write, or replay the answer saved under its Idempotency-Key (when honoured).

    Only applied answers are saved; the same key with another method, path or body answers
    `idempotency_conflict_status`."""
    config = call.config
    key = call.idempotency_key if config.honor_idempotency_key else None
    if not key:
        return apply(call)
    digest = fingerprint(call.method, call.path, call.body)
    saved = call.state.idempotency.get(key, call.now)
    if saved is not None and saved.fingerprint != digest:
        raise ApiError(
            config.idempotency_conflict_status,
            "idempotency_conflict",
            "Idempotency-Key was already used with a different request",
        )
    if saved is not None:
        return Result(saved.status, saved.body, replayed=True)
    result = apply(call)
    if result.applied:
        call.state.idempotency.save(
            key,
            SavedAnswer(
                digest, result.status, result.body, call.now + config.idempotency_ttl_seconds
            ),
        )
    return result


def delete_contact(call: Call) -> Result:
    """DELETE /v1/contacts/{id} (reference §7.4)."""
    contact = _contact(call)
    call.state.store.delete(contact.id)
    return Result(200, {"data": {"deleted": True, "id": contact.id}}, applied=True)


def _contact(call: Call) -> Contact:
    contact = call.state.store.get(call.contact_id or "")
    if contact is None:
        raise not_found()
    return contact


def _require_json(call: Call) -> None:
    if call.config.require_json_content_type and call.content_type != "application/json":
        raise validation_error({"body": "Content-Type must be application/json"})
    if call.body_problem:
        raise validation_error({"body": call.body_problem})


def _positive_int(query: Mapping[str, str], name: str, default: int, errors: dict[str, str]) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        errors[name] = "Must be a positive integer"
        return default
    return int(raw)
