"""The API gateway: one request in, one answer out, in LeadLex's order of checks.

For every request under the API prefix, after `latency_ms` (outside the lock),
all under the sandbox lock:

1. log entry opened, `X-Request-ID` minted;
2. auth: missing or unknown Bearer key -> 401 `invalid_key` (not counted: no workspace);
3. `force_429` fault -> 429 (not counted; Retry-After: `force_429_retry_after_seconds`
   when that is set, else as the `retry_after` knob says, with 1 s);
4. rate limits (sliding minute, daily) -> 429 `rate_limited` (not counted);
   from here on the request counts toward both limits (4xx/5xx too, unless
   `count_errors` is off);
5. route: unknown path -> 404 `not_found`, wrong method -> 405 `method_not_allowed`;
6. permission: GET needs "read", other methods "write" -> 403 `insufficient_permissions`;
7. `error_rate_5xx` fault (methods in `error_methods`) -> 500/502/503, nothing applied;
8. the handler (validation 400, 404, 409, the write);
9. `drop_after_apply_rate` fault on an applied write -> answer dropped;
   `non_json_answer_rate` fault on an applied write -> 200 with a body that is not JSON.

`late_apply_seconds` (with `late_apply_answer`, `late_apply_writes`) replaces step 8 for a
write: the handler runs that many seconds after arrival on a timer thread (under the lock,
so it sees the store and the Idempotency-Key cache as they are then), and the client is
answered 503 at once ("error"), dropped at once ("drop"), or answered only once the write
is applied ("timeout": a client whose timeout is shorter has given up by then). The log
entry says `late` and gets `applied`/`applied_at` when the write lands.

Every answer carries X-RateLimit-Limit/Remaining/Reset (daily quota, after
counting this request) and X-Request-ID; Retry-After only on 429 when the
`retry_after` knob is on.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from leadlex_sandbox import contacts, export
from leadlex_sandbox.contacts import Call, Result
from leadlex_sandbox.errors import ApiError, rate_limited, server_error
from leadlex_sandbox.state import SandboxState

API_PREFIX = "/functions/v1/api-gateway"

Handler = Callable[[Call], Result]
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, Handler]], ...] = (
    (
        re.compile(r"/v1/contacts/export"),
        {"GET": export.export_contacts},
    ),
    (
        re.compile(r"/v1/contacts"),
        {"GET": contacts.list_contacts, "POST": contacts.create_contact},
    ),
    (
        re.compile(r"/v1/contacts/(?P<contact_id>[^/]+)"),
        {
            "GET": contacts.get_contact,
            "PATCH": contacts.update_contact,
            "DELETE": contacts.delete_contact,
        },
    ),
)
_CONTACT_PATH = re.compile(r"/v1/contacts/(?!export$)([^/]+)")


@dataclass(frozen=True)
class ApiRequest:
    """What the gateway needs from an HTTP request."""

    method: str
    path: str  # relative to API_PREFIX, e.g. "/v1/contacts/123"
    query: Mapping[str, str]
    query_string: str
    authorization: str | None
    idempotency_key: str | None
    content_type: str | None  # mimetype without parameters
    raw_body: bytes
    arrival: float  # epoch seconds


@dataclass
class ApiAnswer:
    """What to send back (or not, when `drop`)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None  # sent instead of the JSON body (non_json_answer_rate, export)
    mimetype: str = "application/json"


def decode_body(raw: bytes) -> tuple[Any, str | None]:
    """(parsed JSON or None, problem or None)."""
    if not raw.strip():
        return None, None
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, "Invalid JSON"


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, or None."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


class Gateway:
    """Runs API requests against one SandboxState."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    def handle(self, request: ApiRequest) -> ApiAnswer:
        """Answer one API request (see the module docstring for the order of checks)."""
        latency_ms = self.state.config.latency_ms
        if latency_ms:
            time.sleep(latency_ms / 1000)  # outside the lock: slow, not serialised
        body, body_problem = decode_body(request.raw_body)
        match = _CONTACT_PATH.fullmatch(request.path)
        contact_id = match.group(1) if match else None
        state = self.state
        with state.lock:
            config = state.config
            now = state.clock()
            entry = state.log.open(
                ts=request.arrival,
                method=request.method,
                path=request.path,
                query=request.query_string,
                contact_id=contact_id,
                body=body,
                request_id=state.ids.new(),
                idempotency_key=request.idempotency_key,
            )
            counted = False
            retry_after: float | None = None
            send_retry_after = config.retry_after
            late: _LateWrite | None = None
            try:
                permissions = self._authenticate(request)
                if config.force_429 > 0:
                    state.config = config = config.updated({"force_429": config.force_429 - 1})
                    forced_wait = config.force_429_retry_after_seconds
                    send_retry_after = send_retry_after or forced_wait is not None
                    raise rate_limited(forced_wait or 1)
                block = state.limiter.check(now, config)
                if block is not None:
                    raise rate_limited(block.retry_after)
                counted = True
                handler = self._route(request)
                need = "read" if request.method == "GET" else "write"
                if need not in permissions:
                    raise ApiError(
                        403, "insufficient_permissions", f"API key lacks the {need} permission"
                    )
                if (
                    config.error_rate_5xx > 0
                    and request.method in config.error_methods
                    and state.rng.random() < config.error_rate_5xx
                ):
                    raise server_error(state.rng.choice(config.error_statuses))
                call = Call(
                    state=state,
                    config=config,
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    body=body,
                    body_problem=body_problem,
                    content_type=request.content_type,
                    contact_id=contact_id,
                    idempotency_key=request.idempotency_key,
                    now=now,
                    query_string=request.query_string,
                )
                if self._late(request.method):
                    late = _LateWrite(state, handler, call, entry)
                    late.schedule(request.arrival + config.late_apply_seconds)
                    if config.late_apply_answer == "error":
                        raise server_error(503)
                    result = Result(0, {})
                else:
                    result = handler(call)
            except ApiError as error:
                result = Result(error.status, error.envelope())
                retry_after = error.retry_after
            if counted and result.status != 429 and (result.status < 400 or config.count_errors):
                state.limiter.record(now, config)
            headers = state.limiter.quota(now, config).headers()
            headers["X-Request-ID"] = entry.request_id
            if retry_after is not None and send_retry_after:
                headers["Retry-After"] = str(int(retry_after))
            drop = (
                result.applied
                and config.drop_after_apply_rate > 0
                and state.rng.random() < config.drop_after_apply_rate
            )
            garbled = (
                result.applied
                and not drop
                and config.non_json_answer_rate > 0
                and state.rng.random() < config.non_json_answer_rate
            )
            if late is not None and config.late_apply_answer == "drop":
                drop = True
            entry.status = result.status
            entry.applied = result.applied
            entry.replayed = result.replayed
            entry.dropped = drop
            entry.non_json = garbled
            entry.late = late is not None
        if late is not None and config.late_apply_answer == "timeout":
            result = late.wait()
            with state.lock:
                entry.status = result.status
        if garbled:
            return ApiAnswer(result.status, {}, headers, raw=b"OK (applied)")
        if result.raw is not None:
            headers.update(result.headers or {})
            return ApiAnswer(
                result.status,
                {},
                headers,
                drop,
                raw=result.raw,
                mimetype=result.content_type or "application/octet-stream",
            )
        return ApiAnswer(result.status, result.body, headers, drop)

    def _late(self, method: str) -> bool:
        """Whether this write is to be applied late (and count it against late_apply_writes)."""
        config = self.state.config
        if method not in ("PATCH", "POST") or config.late_apply_seconds <= 0:
            return False
        left = config.late_apply_writes
        if left is None:
            return True
        if left <= 0:
            return False
        self.state.config = config.updated({"late_apply_writes": left - 1})
        return True

    def _authenticate(self, request: ApiRequest) -> frozenset[str]:
        key = bearer_key(request.authorization)
        if key is None:
            message = (
                "Missing Authorization header"
                if not request.authorization
                else "Authorization header must be: Bearer <api key>"
            )
            raise ApiError(401, "invalid_key", message)
        permissions = self.state.config.permissions(key)
        if permissions is None:
            raise ApiError(401, "invalid_key", "Invalid API key")
        return permissions

    @staticmethod
    def _route(request: ApiRequest) -> Handler:
        for pattern, methods in _ROUTES:
            if pattern.fullmatch(request.path):
                handler = methods.get(request.method)
                if handler is None:
                    raise ApiError(
                        405, "method_not_allowed", f"{request.method} is not allowed here"
                    )
                return handler
        raise ApiError(404, "not_found", "Endpoint not found")


class _LateWrite:
    """A write applied on a timer thread, `late_apply_seconds` after it arrived."""

    def __init__(self, state: SandboxState, handler: Handler, call: Call, entry: Any) -> None:
        self.state = state
        self.handler = handler
        self.call = call
        self.entry = entry
        self.done = threading.Event()
        self.result = Result(504, server_error(504).envelope())

    def schedule(self, at: float) -> None:
        timer = threading.Timer(max(0.0, at - time.time()), self._apply)
        timer.daemon = True
        self.state.late_timers.append(timer)
        timer.start()

    def _apply(self) -> None:
        state = self.state
        with state.lock:
            try:
                self.result = self.handler(
                    replace(self.call, config=state.config, now=state.clock())
                )
            except ApiError as error:
                self.result = Result(error.status, error.envelope())
            self.entry.applied = self.result.applied
            self.entry.replayed = self.result.replayed
            self.entry.applied_at = time.time() if self.result.applied else None
        self.done.set()

    def wait(self) -> Result:
        """The write's result once applied (the request thread waits for it outside the lock)."""
        self.done.wait(timeout=self.state.config.late_apply_seconds + 60)
        return self.result
