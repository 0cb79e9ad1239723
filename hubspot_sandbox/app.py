"""The simulator's HTTP API: HubSpot's token, Webhooks Journal and subscription endpoints
(reference crm-sources-2026.md §2), file downloads, and /_hubspot/ control endpoints.

| Method and path                                             | Answer                          |
|-------------------------------------------------------------|---------------------------------|
| POST /oauth/v1/token, /oauth/2026-03/token (form)           | {access_token, expires_in, ...} |
| GET|POST /webhooks-journal/subscriptions/2026-03            | {results} / the subscription    |
| GET|DELETE /webhooks-journal/subscriptions/2026-03/{id}     | subscription / 204              |
| GET {journal}/earliest, /latest, /offset/{o}/next           | {currentOffset, url, expiresAt} |
| GET {journal}/batch/earliest|latest/{n}, /batch/{o}/next/{n} | {status, results[], ...}        |
| POST {journal}/batch/read {"inputs": [offsets]}             | 200, or 207 with errors[]       |
| GET /_files/{offset}?expires&sig                            | the journal file (JSON)         |
| POST /_hubspot/changes {"changes": [...]}                   | {offset, webhookEvents}         |
| POST /_hubspot/clock {"advance": s} or {"offset": s}        | {now}  (delivers due webhooks)  |
| POST /_hubspot/deliver                                      | {delivered, failed, given_up}   |
| GET|POST /_hubspot/config (partial knobs)                   | every knob                      |
| GET /_hubspot/stats, POST /_hubspot/reset                   | counters / {reset}              |

{journal} is /webhooks-journal/journal/2026-03 (all installs) or
/webhooks-journal/journal-local/2026-03 (`?installPortalId=` filters one account).
Errors use HubSpot's body {status, category, correlationId, message}.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from flask import Flask, Response, jsonify, request

from hubspot_sandbox.config import JOURNAL_SCOPES, ConfigError
from hubspot_sandbox.formats import FORMATS
from hubspot_sandbox.model import Entry
from hubspot_sandbox.state import HubSpotSandboxState, parse_change

JOURNAL = "/webhooks-journal/journal/2026-03"
JOURNAL_LOCAL = "/webhooks-journal/journal-local/2026-03"
SUBSCRIPTIONS = "/webhooks-journal/subscriptions/2026-03"
READ_SCOPE = "developer.webhooks_journal.read"
SUBS_READ = "developer.webhooks_journal.subscriptions.read"
SUBS_WRITE = "developer.webhooks_journal.subscriptions.write"


class HubSpotError(Exception):
    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def create_app(state: HubSpotSandboxState) -> Flask:
    """The WSGI app serving one simulated HubSpot account."""
    app = Flask("hubspot_sandbox")

    @app.errorhandler(HubSpotError)
    def hubspot_error(err: HubSpotError) -> Response:
        body = {
            "status": "error",
            "category": err.category,
            "correlationId": str(uuid.uuid4()),
            "message": err.message,
            **err.extra,
        }
        resp = jsonify(body)
        resp.status_code = err.status
        if err.status == 429:
            resp.headers["Retry-After"] = str(state.config.retry_after_seconds)
        return resp

    def authorize(scope: str) -> None:
        header = request.headers.get("Authorization", "")
        token = state.token(header.removeprefix("Bearer ").strip()) if header else None
        if token is None:
            raise HubSpotError(401, "INVALID_AUTHENTICATION", "missing, unknown or expired token")
        if scope not in token.scopes:
            raise HubSpotError(403, "MISSING_SCOPES", f"this call needs the scope {scope}")
        fault = state.take_fault()
        if fault == "429":
            raise HubSpotError(429, "RATE_LIMITS", "You have reached your secondly limit.")
        if fault == "5xx":
            raise HubSpotError(502, "INTERNAL_ERROR", "Bad gateway (simulated)")

    # ---- token ---------------------------------------------------------------------------
    def token_endpoint() -> Response:
        form = request.form
        if form.get("grant_type") != "client_credentials":
            raise HubSpotError(400, "VALIDATION_ERROR", "grant_type must be client_credentials")
        cfg = state.config
        if form.get("client_id") != cfg.client_id or form.get("client_secret") != cfg.client_secret:
            raise HubSpotError(400, "BAD_CLIENT_ID", "unknown client_id or wrong client_secret")
        asked = frozenset((form.get("scope") or "").split())
        unknown = asked - set(JOURNAL_SCOPES)
        if not asked or unknown:
            raise HubSpotError(400, "BAD_SCOPES", f"unknown or missing scopes: {sorted(unknown)}")
        token = state.issue_token(asked)
        return jsonify(
            {
                "access_token": token.value,
                "token_type": "bearer",
                "expires_in": cfg.token_ttl_seconds,
                "scope": " ".join(sorted(asked)),
            }
        )

    app.add_url_rule("/oauth/v1/token", "token_v1", token_endpoint, methods=["POST"])
    app.add_url_rule("/oauth/2026-03/token", "token_2026", token_endpoint, methods=["POST"])

    # ---- subscriptions -------------------------------------------------------------------
    @app.get(SUBSCRIPTIONS)
    def list_subscriptions() -> Response:
        authorize(SUBS_READ)
        with state.lock:
            results = [s.view(state.config.app_id) for s in state.subscriptions.values()]
        return jsonify({"results": results})

    @app.post(SUBSCRIPTIONS)
    def upsert_subscription() -> Response:
        authorize(SUBS_WRITE)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "body must be a JSON object")
        for name in ("subscriptionType", "objectTypeId", "actions"):
            if name not in body:
                raise HubSpotError(
                    400, "VALIDATION_ERROR", f"{name} is required", context={"field": [name]}
                )
        if not isinstance(body["actions"], list) or not body["actions"]:
            raise HubSpotError(400, "VALIDATION_ERROR", "actions must be a non-empty list")
        sub = state.upsert_subscription(body)
        return jsonify(sub.view(state.config.app_id))

    @app.get(f"{SUBSCRIPTIONS}/<sub_id>")
    def get_subscription(sub_id: str) -> Response:
        authorize(SUBS_READ)
        with state.lock:
            sub = state.subscriptions.get(sub_id)
            if sub is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", "no such subscription")
            return jsonify(sub.view(state.config.app_id))

    @app.delete(f"{SUBSCRIPTIONS}/<sub_id>")
    def delete_subscription(sub_id: str) -> Response:
        authorize(SUBS_WRITE)
        with state.lock:
            state.subscriptions.pop(sub_id, None)
        return Response(status=204)

    # ---- journal -------------------------------------------------------------------------
    def pointer(entry: Entry) -> dict[str, Any]:
        expires, sig = state.signed_query(entry.offset)
        url = f"{request.host_url.rstrip('/')}/_files/{entry.offset}?expires={expires}&sig={sig}"
        return {"currentOffset": entry.offset, "url": url, "expiresAt": _iso(expires)}

    def portal_filter(local: bool) -> int | None:
        if not local:
            return None
        raw = request.args.get("installPortalId")
        if raw is None:
            return state.config.portal_id
        if not raw.isdigit():
            raise HubSpotError(400, "VALIDATION_ERROR", "installPortalId must be a number")
        return int(raw)

    def check_offset(offset: str) -> None:
        try:
            UUID(offset)
        except ValueError:
            raise HubSpotError(400, "VALIDATION_ERROR", "offset must be a UUID") from None

    def expired(offset: str) -> HubSpotError:
        return HubSpotError(
            state.config.expired_offset_status,
            "OBJECT_NOT_FOUND",
            "the offset has expired or does not exist",
            context={"offset": [offset]},
        )

    def count_arg(count: str) -> int:
        if not count.isdigit() or not 1 <= int(count) <= 100:
            raise HubSpotError(400, "VALIDATION_ERROR", "count must be 1 to 100")
        return int(count)

    def batch(entries: list[Entry]) -> Response:
        now = _iso(state.clock.now())
        return jsonify(
            {
                "status": "COMPLETE",
                "results": [pointer(e) for e in entries],
                "startedAt": now,
                "completedAt": now,
            }
        )

    for prefix, local in ((JOURNAL, False), (JOURNAL_LOCAL, True)):
        kind = "local" if local else "global"

        def earliest(local: bool = local) -> Response:
            authorize(READ_SCOPE)
            entry = state.earliest(portal_filter(local))
            return Response(status=204) if entry is None else jsonify(pointer(entry))

        def latest(local: bool = local) -> Response:
            authorize(READ_SCOPE)
            entry = state.latest(portal_filter(local))
            return Response(status=204) if entry is None else jsonify(pointer(entry))

        def next_one(offset: str, local: bool = local) -> Response:
            authorize(READ_SCOPE)
            check_offset(offset)
            entries = state.after(offset, 1, portal_filter(local))
            if entries is None:
                raise expired(offset)
            if not entries:
                if state.config.tip_response == "no_url":
                    return jsonify({"currentOffset": offset})
                return Response(status=204)
            return jsonify(pointer(entries[0]))

        def batch_first(count: str, local: bool = local) -> Response:
            authorize(READ_SCOPE)
            return batch(state.first(count_arg(count), portal_filter(local)))

        def batch_last(count: str, local: bool = local) -> Response:
            authorize(READ_SCOPE)
            return batch(state.first(count_arg(count), portal_filter(local), newest=True))

        def batch_next(offset: str, count: str, local: bool = local) -> Response:
            authorize(READ_SCOPE)
            check_offset(offset)
            entries = state.after(offset, count_arg(count), portal_filter(local))
            if entries is None:
                raise expired(offset)
            return batch(entries)

        def batch_read(local: bool = local) -> Response:
            authorize(READ_SCOPE)
            body = request.get_json(silent=True)
            inputs = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
                raise HubSpotError(400, "VALIDATION_ERROR", "inputs: 1 to 100 offsets")
            for offset in inputs:
                check_offset(str(offset))
            portal = portal_filter(local)
            found, errors = [], []
            for offset in inputs:
                entry = state.entry(str(offset))
                if entry is None or (portal is not None and entry.portal_id != portal):
                    errors.append(
                        {
                            "status": "error",
                            "category": "OBJECT_NOT_FOUND",
                            "message": "the offset has expired or does not exist",
                            "context": {"offset": [str(offset)]},
                        }
                    )
                else:
                    found.append(entry)
            resp = batch(found)
            if errors:
                data = resp.get_json()
                data.update(numErrors=len(errors), errors=errors)
                resp = jsonify(data)
                resp.status_code = 207
            return resp

        app.add_url_rule(f"{prefix}/batch/read", f"{kind}_b_read", batch_read, methods=["POST"])
        app.add_url_rule(f"{prefix}/earliest", f"{kind}_earliest", earliest)
        app.add_url_rule(f"{prefix}/latest", f"{kind}_latest", latest)
        app.add_url_rule(f"{prefix}/offset/<offset>/next", f"{kind}_next", next_one)
        app.add_url_rule(f"{prefix}/batch/earliest/<count>", f"{kind}_b_first", batch_first)
        app.add_url_rule(f"{prefix}/batch/latest/<count>", f"{kind}_b_last", batch_last)
        app.add_url_rule(f"{prefix}/batch/<offset>/next/<count>", f"{kind}_b_next", batch_next)

    @app.get("/_files/<offset>")
    def download(offset: str) -> Response:
        expires = request.args.get("expires", "")
        sig = request.args.get("sig", "")
        if state.config.download_delay_ms:
            time.sleep(state.config.download_delay_ms / 1000)
        result = state.check_download(offset, int(expires) if expires.isdigit() else 0, sig)
        if result == "forbidden":
            return Response("<Error><Code>AccessDenied</Code></Error>", 403, mimetype="text/xml")
        if result == "gone":
            return Response("<Error><Code>NoSuchKey</Code></Error>", 404, mimetype="text/xml")
        if result == "fault" or not isinstance(result, Entry):
            return Response("<Error><Code>InternalError</Code></Error>", 500, mimetype="text/xml")
        fmt = str(state.config.extra.get("format", "journal-v1"))
        render = FORMATS.get(fmt, FORMATS["journal-v1"])
        return Response(json.dumps(render(result)), 200, mimetype="application/json")

    # ---- control -------------------------------------------------------------------------
    def control_error(message: str) -> Response:
        resp = jsonify({"status": "error", "category": "VALIDATION_ERROR", "message": message})
        resp.status_code = 400
        return resp

    @app.post("/_hubspot/changes")
    def record_changes() -> Response:
        body = request.get_json(silent=True)
        raw = body.get("changes") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not 1 <= len(raw) <= 100:
            return control_error("changes: expected a list of 1 to 100 changes")
        try:
            changes = [parse_change(c, state.config.portal_id, state.clock.now_ms()) for c in raw]
        except ValueError as exc:
            return control_error(str(exc))
        result = state.record(changes)
        result["deliveries"] = state.deliver_due()
        return jsonify(result)

    @app.post("/_hubspot/clock")
    def move_clock() -> Response:
        body = request.get_json(silent=True) or {}
        if "offset" in body:
            state.clock.set_offset(float(body["offset"]))
        if "advance" in body:
            state.clock.advance(float(body["advance"]))
        deliveries = state.deliver_due() if body.get("deliver", True) else {}
        return jsonify({"now": state.clock.now(), "deliveries": deliveries})

    @app.post("/_hubspot/deliver")
    def deliver() -> Response:
        return jsonify(state.deliver_due())

    @app.route("/_hubspot/config", methods=["GET", "POST"])
    def config() -> Response:
        if request.method == "POST":
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return control_error("body: expected {knob: value}")
            knobs = dict(body)
            fmt = knobs.pop("format", None)
            try:
                with state.lock:
                    state.config.update(knobs)
                    if "seed" in knobs:
                        state.rng.seed(knobs["seed"])
                    if fmt is not None:
                        if fmt not in FORMATS:
                            raise ConfigError(f"format: expected one of {sorted(FORMATS)}")
                        state.config.extra["format"] = fmt
            except ConfigError as exc:
                return control_error(str(exc))
        return jsonify(state.config.public())

    @app.get("/_hubspot/stats")
    def stats() -> Response:
        with state.lock:
            data: dict[str, float] = dict(state.stats)
            data["pending_deliveries"] = len(state.outbox)
            data["journal_size"] = len(state.entries)
            data["now"] = state.clock.now()
        return jsonify(data)

    @app.post("/_hubspot/reset")
    def reset() -> Response:
        state.reset()
        return jsonify({"reset": True})

    return app
