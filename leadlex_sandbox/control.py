"""Control endpoints under /_sandbox/: no auth, no rate limit, not in the request log.

| Method and path              | Body / query                            | Answer `data`           |
|------------------------------|-----------------------------------------|-------------------------|
| GET  /_sandbox/health        |                                         | {"ok": true}            |
| POST /_sandbox/reset         | {"keep_config": false} (optional)       | {"reset": true}         |
| POST /_sandbox/contacts      | contact, [contacts] or {"contacts": []} | same shape, ids (201)   |
| GET  /_sandbox/contacts      |                                         | [contact] (with notes)  |
| GET  /_sandbox/contacts/{id} |                                         | contact (404 not_found) |
| GET  /_sandbox/requests      | ?since=SEQ&contact_id=ID                | [log entry]             |
| GET/POST /_sandbox/faults    | partial {knob: value}, fault knobs only | the fault knobs         |
| GET/POST /_sandbox/config    | partial {knob: value}, any knob         | every knob + "limits"   |
| GET  /_sandbox/limits        |                                         | limits, usage, reset    |

Reset restores the start-up config (faults included) unless keep_config is true.
Bad input answers 400 `validation_error` with `details.fields` in the LeadLex envelope.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from leadlex_sandbox.config import FAULT_KNOBS, ConfigError
from leadlex_sandbox.errors import ApiError, not_found, validation_error
from leadlex_sandbox.state import SandboxState


def control_blueprint(state: SandboxState) -> Blueprint:
    """The /_sandbox/ endpoints bound to one SandboxState."""
    bp = Blueprint("sandbox_control", __name__, url_prefix="/_sandbox")

    @bp.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        return jsonify(error.envelope()), error.status

    @bp.get("/health")
    def health() -> Response:
        return jsonify({"data": {"ok": True}})

    @bp.post("/reset")
    def reset() -> Response:
        body = _json_object(allow_empty=True)
        keep = body.get("keep_config", False)
        if not isinstance(keep, bool):
            raise validation_error({"keep_config": "Must be true or false"})
        state.reset(keep_config=keep)
        return jsonify({"data": {"reset": True}})

    @bp.post("/contacts")
    def seed_contacts() -> tuple[Response, int]:
        body = request.get_json(force=True, silent=True)
        if body is None:
            raise validation_error(
                {"body": "Send a contact, a list of contacts or {contacts: [...]}"}
            )
        many = isinstance(body, list) or (isinstance(body, dict) and "contacts" in body)
        records = body if isinstance(body, list) else body.get("contacts", [body])
        if not isinstance(records, list):
            raise validation_error({"contacts": "Must be a list"})
        with state.lock:
            created = []
            try:
                for record in records:
                    created.append(state.store.seed(record))
            except ApiError as error:
                for contact in created:
                    state.store.delete(contact.id)
                if error.details is not None:
                    error.details["index"] = len(created)
                raise
            views = [c.full_view() for c in created]
        return jsonify({"data": views if many else views[0]}), 201

    @bp.get("/contacts")
    def list_contacts() -> Response:
        with state.lock:
            return jsonify({"data": [c.full_view() for c in state.store.all()]})

    @bp.get("/contacts/<contact_id>")
    def get_contact(contact_id: str) -> Response:
        with state.lock:
            contact = state.store.get(contact_id)
            if contact is None:
                raise not_found()
            return jsonify({"data": contact.full_view()})

    @bp.get("/requests")
    def requests_log() -> Response:
        since_raw = request.args.get("since", "0")
        if not since_raw.isdigit():
            raise validation_error({"since": "Must be a non-negative integer"})
        with state.lock:
            entries = state.log.entries(int(since_raw), request.args.get("contact_id"))
            return jsonify({"data": [e.to_dict() for e in entries]})

    @bp.route("/faults", methods=["GET", "POST"])
    def faults() -> Response:
        if request.method == "POST":
            _configure(state, _json_object(), FAULT_KNOBS)
        data = state.config.to_dict()
        return jsonify({"data": {k: data[k] for k in sorted(FAULT_KNOBS)}})

    @bp.route("/config", methods=["GET", "POST"])
    def config() -> Response:
        if request.method == "POST":
            _configure(state, _json_object(), None)
        return jsonify({"data": state.config.to_dict()})

    @bp.get("/limits")
    def limits() -> Response:
        return jsonify({"data": state.usage()})

    return bp


def _json_object(*, allow_empty: bool = False) -> dict[str, Any]:
    if allow_empty and not request.get_data().strip():
        return {}
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        raise validation_error({"body": "Must be a JSON object"})
    return body


def _configure(
    state: SandboxState, changes: dict[str, Any], allowed: frozenset[str] | None
) -> None:
    try:
        state.configure(changes, allowed)
    except ConfigError as error:
        raise validation_error({error.knob: error.reason}) from error
