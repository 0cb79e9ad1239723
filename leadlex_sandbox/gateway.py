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
7. `error_rate_5xx` fault -> 500/502/503, nothing applied;
8. the handler (validation 400, 404, 409, the write);
9. `drop_after_apply_rate` fault on an applied write -> answer dropped.

Every answer carries X-RateLimit-Limit/Remaining/Reset (daily quota, after
counting this request) and X-Request-ID; Retry-After only on 429 when the
`retry_after` knob is on.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from leadlex_sandbox import contacts
from leadlex_sandbox.contacts import Call, Result
from leadlex_sandbox.errors import ApiError, rate_limited, server_error
from leadlex_sandbox.state import SandboxState

API_PREFIX = "/functions/v1/api-gateway"

Handler = Callable[[Call], Result]
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, Handler]], ...] = (
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
_CONTACT_PATH = re.compile(r"/v1/contacts/([^/]+)")


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
                if config.error_rate_5xx > 0 and state.rng.random() < config.error_rate_5xx:
                    raise server_error(state.rng.choice(config.error_statuses))
                result = handler(
                    Call(
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
                    )
                )
            except ApiError as error:
                result = Result(error.status, error.envelope())
                retry_after = error.retry_after
            if counted and (result.status < 400 or config.count_errors):
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
            entry.status = result.status
            entry.applied = result.applied
            entry.replayed = result.replayed
            entry.dropped = drop
        return ApiAnswer(result.status, result.body, headers, drop)

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
