"""leadlex_sandbox: a local LeadLex API simulator, strict where the docs are silent.

Every test of leadlex-sync trusts this package, so it follows
reference/leadlex-api.md to the letter and, where the docs say nothing (§12),
picks the behaviour that is harder on a client and makes it a knob of
`SandboxConfig`. It imports nothing from `worker` or `webhook_app`.

Public API::

    SandboxConfig(...)                       every knob, with defaults (config.py)
    SandboxServer(config=None, host="127.0.0.1", port=0)
        .start() -> self / .stop() / with-block
        .url       http://127.0.0.1:PORT       (control endpoints: .url + "/_sandbox/...")
        .base_url  .url + "/functions/v1/api-gateway"   (= LEADLEX_BASE_URL)
        .api_key, .config, .state, .store, .seed(records)
    serve(host="127.0.0.1", port=8787, config=None, *, seed_demo=False)   blocking
    demo_contacts() -> list[dict]            seed records with fixed UUIDs
    python -m leadlex_sandbox --host --port --api-key --plan --seed-demo

API (under /functions/v1/api-gateway): GET/POST /v1/contacts,
GET/PATCH/DELETE /v1/contacts/{id}. Control endpoints: see control.py.

Documented behaviour, kept as documented:
- Bearer auth; 401 `invalid_key`; 403 `insufficient_permissions` (GET needs
  "read", POST/PATCH/DELETE "write"); 404 `not_found`; 400 `validation_error`
  with message "Invalid request parameters" and `details.fields.{name}`;
  429 `rate_limited`; envelope `{"error": {"code", "message", "details"?}}`.
- Plans starter/pro/org = 10/50/200 per minute, 100/1000/10000 per day; the day
  resets at 00:00 UTC; X-RateLimit-Limit/Remaining/Reset (daily quota, Reset in
  epoch seconds) and X-Request-ID (`req_` + 26-char ULID) on every API answer.
- PATCH: fields full_name, email, phone (with country code), job_title,
  company_name, linkedin_url, notes; notes APPEND joined by "\\n" (nothing
  before the first note), every other field overwrites, updated_date is the
  time of this update, first/last names re-derived from full_name.
- POST: at least one of first_name/last_name/full_name/email; name derivation
  ("Last, First", split on the last space, email local part); created_date kept
  when valid and within [-5 years, +24 h], else now; `company`/`company_name`
  and `related_company_id`/`company_id` both accepted.
- Field names drift as documented: list/PATCH say `company_name`, `created_at`
  (list); get says `company`, `created_date`.

Undocumented behaviour (reference §12) and what we chose:

| Behaviour (§12)             | Our default [knob]                                 | Why
|-----------------------------|----------------------------------------------------|------------------
| per-minute window           | sliding, 60 s [minute_window_seconds]              | stricter
| what spends quota           | every request past auth + limiter, 4xx/5xx too;    | stricter; 401
|                             | 401 and 429 never [count_errors]                   | no workspace
| limit scope                 | one workspace: all keys share the budget           | plan is per ws
| 429 body                    | envelope `rate_limited`; never says minute vs day  | §12.5
| Retry-After                 | off [retry_after]                                  | undocumented
| X-RateLimit-* on minute 429 | daily quota (Remaining may be > 0)                 | headers = day
| day boundary                | multiples of day_seconds since epoch [day_seconds] | = 00:00 UTC
| Idempotency-Key on PATCH    | ignored [honor_idempotency_key; when on: 24 h ttl, | not listed for
| and POST /v1/contacts       | conflict 409 idempotency_conflict; a late write    | PATCH / POST
|                             | whose key was applied meanwhile is a replay]       |
| notes in answers            | never shown [expose_notes]                         | write-only
| notes separator / max       | "\\n" / 10000 per append [notes_separator, ...]    | seed page
| null value                  | 400 (off: clears the field) [reject_null]          | "all strings"
| "" or blank value           | 400 (off: clears; full_name never blank)           | blank: 400
|                             | [reject_empty_string]                              |
| non-string value            | 400 always                                         | "all strings"
| unknown field (first_name,  | 400 "Unknown field" (off: ignored)                 | not in the list
| company, tags on PATCH)     | [reject_unknown_fields]                            |
| PATCH {}                    | 400 details.fields.body [reject_empty_body]        | nothing to do
| Content-Type on writes      | application/json or 400 [require_json_content_type]| documented
| string length               | <= 255, notes <= 10000 [max_field_length]          | stricter
| email / phone / linkedin    | strict regex / "+" and 8-15 digits / http(s)       | "invalid field
|                             | (*.)linkedin.com with a path                       | format"
| create status               | 201 [create_status]                                | undocumented
| duplicate email on create   | 409 duplicate_contact + existing_id                | "duplicate
|                             | [duplicate_email="allow" to create anyway]         | detection"
| per_page > 100, page < 1    | 400, not clamped                                   | stricter
| unknown or malformed id     | 404 not_found                                      | documented code
| list_id filter              | 404 (the sandbox has no lists)                     | -
| include=notes,tasks,deals,* | accepted, arrays empty; other values 400           | not modeled
| unknown path / method       | 404 not_found / 405 method_not_allowed, counted    | gateway-like
| client X-Request-ID         | ignored; always a fresh req_ id                    | undocumented

Faults (all off by default): `latency_ms` (sleep before answering),
`error_rate_5xx` (answer one of `error_statuses` = 500/502/503 in the envelope,
nothing applied, counted; only for the methods in `error_methods`, default all),
`drop_after_apply_rate` (apply the write, then close the connection unanswered:
httpx raises RemoteProtocolError/ReadError),
`force_429` (the next N authenticated requests answer 429, not counted;
`Retry-After: S` when `force_429_retry_after_seconds` = S is set), `seed`
(the RNG of the dice; None = from the OS; reset re-seeds),
`late_apply_seconds` (a PATCH or POST is applied that many seconds after it arrived, on
a timer; the client meanwhile gets `late_apply_answer`: "timeout" = no answer until
then, "error" = 503 at once, "drop" = connection closed at once; `late_apply_writes` = N
limits it to the next N writes), `non_json_answer_rate` (apply the write, then answer
200 with a body that is not JSON).

Third-party edits: configure a second key in `api_keys` and PATCH through the API with
it, like any other LeadLex user; every write (any key) gives the contact a new, strictly
later `updated_date`.
"""

from __future__ import annotations

from leadlex_sandbox.app import create_app
from leadlex_sandbox.config import (
    DEFAULT_API_KEY,
    PLANS,
    READ_ONLY,
    READ_WRITE,
    ConfigError,
    SandboxConfig,
)
from leadlex_sandbox.demo import demo_contacts
from leadlex_sandbox.gateway import API_PREFIX
from leadlex_sandbox.server import SandboxServer, serve
from leadlex_sandbox.state import SandboxState

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "PLANS",
    "READ_ONLY",
    "READ_WRITE",
    "ConfigError",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "create_app",
    "demo_contacts",
    "serve",
]
