"""The LeadLex HTTP client: the worker's only httpx user, and its error classification.

Every call returns a `LeadLexResponse` (the `data` envelope, the rate headers and the
`X-Request-ID`) or raises one `LeadLexError` subclass. Callers decide what to do from
three class/instance flags, never from status codes:

- `retryable` (class): try again later (network trouble, 5xx, 429) or never (400, 404...).
- `maybe_applied` (instance): the write may have reached LeadLex although we got no
  answer (read timeout, connection dropped after sending, 5xx). A blind retry of such a
  PATCH could append `notes` twice (reference/leadlex-api.md §8, §12 gap 1), so the
  pipeline must check before resending a note.
- `opens_circuit` (class): the key is invalid or lacks permission (401/403); every
  worker stops delivering until a probe succeeds (`worker.ratelimit.Circuit`).

Status / condition                    class                        retryable  maybe_applied
400                                    LeadLexValidationError       no         no
401                                    InvalidKeyError              no         no   (circuit)
403                                    InsufficientPermissionsError no         no   (circuit)
404 with a LeadLex error body          ContactNotFoundError         no         no
429                                    RateLimitedError             yes        no
5xx                                    LeadLexServerError           yes        yes
ConnectTimeout / PoolTimeout           LeadLexTimeoutError          yes        no
ReadTimeout / WriteTimeout             LeadLexTimeoutError          yes        yes
ConnectError, ProxyError, bad URL      LeadLexConnectionError       yes        no
RemoteProtocolError, ReadError, ...    LeadLexConnectionError       yes        yes
other 3xx/4xx, 404 without a LeadLex   UnexpectedResponseError      no         no
  error body (wrong LEADLEX_BASE_URL?)
2xx whose body is not a JSON object    UnexpectedResponseError      no         yes (writes)

The API key is sent only in the `Authorization` header; it is refused at construction
if it could not be a valid header value, and scrubbed from every error message, so it
never shows up in a message, a repr or a log line.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

__all__ = [
    "ContactNotFoundError",
    "InsufficientPermissionsError",
    "InvalidKeyError",
    "LeadLexClient",
    "LeadLexConnectionError",
    "LeadLexError",
    "LeadLexResponse",
    "LeadLexServerError",
    "LeadLexTimeoutError",
    "LeadLexValidationError",
    "RateInfo",
    "RateLimitedError",
    "UnexpectedResponseError",
    "shared_client",
]

CONNECT_TIMEOUT = 5.0
_KEY_SHAPE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: a legal header token
_EPOCH_MIN = 1_000_000_000  # 2001-09-09: smaller X-RateLimit-Reset values are "seconds from now"
_EPOCH_MS_MIN = 1_000_000_000_000  # larger values are epoch milliseconds


# ---- rate headers -------------------------------------------------------------------------


def _first(headers: httpx.Headers, name: str) -> str | None:
    """The first non-empty value of a header (proxies sometimes repeat them)."""
    for value in headers.get_list(name, split_commas=True):
        if value.strip():
            return value.strip()
    return None


def _non_negative_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        number = float(raw)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0 or not number.is_integer():
        return None
    return int(number)


def _retry_after(raw: str | None, now: float) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date; junk -> None."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _reset(raw: str | None, now: float) -> int | None:
    """X-RateLimit-Reset as epoch seconds.

    LeadLex documents epoch seconds only by example (reference §12 gap 7), so two other
    common encodings are normalised too: small values are seconds from now, very large
    ones epoch milliseconds.
    """
    value = _non_negative_int(raw)
    if value is None:
        return None
    if value >= _EPOCH_MS_MIN:
        return value // 1000
    if value < _EPOCH_MIN:
        return math.ceil(now + value)
    return value


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What one response said about the budget; a header that is missing or junk is None.

    `limit`/`remaining` come from X-RateLimit-Limit/-Remaining (LeadLex: the daily quota),
    `reset` is epoch seconds (X-RateLimit-Reset), `retry_after` seconds to wait (Retry-After,
    given as seconds or as an HTTP-date, converted with the clock at parse time).
    """

    limit: int | None = None
    remaining: int | None = None
    reset: int | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(
        cls, headers: httpx.Headers | Mapping[str, str], now: float | None = None
    ) -> RateInfo:
        """Parse the rate headers of a response, tolerating junk."""
        if not isinstance(headers, httpx.Headers):
            headers = httpx.Headers(dict(headers))
        at = time.time() if now is None else now
        return cls(
            limit=_non_negative_int(_first(headers, "x-ratelimit-limit")),
            remaining=_non_negative_int(_first(headers, "x-ratelimit-remaining")),
            reset=_reset(_first(headers, "x-ratelimit-reset"), at),
            retry_after=_retry_after(headers.get("retry-after", "").strip() or None, at),
        )


@dataclass(frozen=True, slots=True)
class LeadLexResponse:
    """A successful answer: the `data` envelope (list endpoints: plus `meta`)."""

    status: int
    data: dict[str, Any]
    rate: RateInfo
    request_id: str
    meta: dict[str, Any] = field(default_factory=dict)


# ---- errors -------------------------------------------------------------------------------


class LeadLexError(Exception):
    """A LeadLex call that did not succeed; see the module docstring for the flags."""

    retryable: ClassVar[bool] = False
    opens_circuit: ClassVar[bool] = False
    maybe_applied: bool = False  # class default; instances may override

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: Mapping[str, Any] | None = None,
        request_id: str = "",
        rate: RateInfo | None = None,
        maybe_applied: bool | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = " ".join(message.split())  # one line
        self.details: dict[str, Any] = dict(details or {})
        self.request_id = request_id
        self.rate = rate
        if maybe_applied is not None:
            self.maybe_applied = maybe_applied
        super().__init__(self._line())

    def _line(self) -> str:
        head = "leadlex" if self.status is None else f"leadlex {self.status}"
        text = f"{head} {self.code or 'error'}: {self.message}"
        fields = _field_errors(self.details)
        if fields:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + ")"
        if self.request_id:
            text += f" [{self.request_id}]"
        return " ".join(text.split())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"request_id={self.request_id!r}, maybe_applied={self.maybe_applied!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only __init__: pickle (Celery result backends, multiprocessing) needs help.
        return (_rebuild_error, (type(self), self.__dict__.copy()))


def _rebuild_error(cls: type[LeadLexError], state: dict[str, Any]) -> LeadLexError:
    err = cls.__new__(cls)
    err.__dict__.update(state)
    Exception.__init__(err, err._line())
    return err


def _field_errors(details: Mapping[str, Any]) -> dict[str, str]:
    fields = details.get("fields")
    if not isinstance(fields, Mapping):
        return {}
    out: dict[str, str] = {}
    for name, reason in fields.items():
        if isinstance(reason, list | tuple):
            out[str(name)] = "; ".join(str(r) for r in reason)
        else:
            out[str(name)] = str(reason)
    return out


class LeadLexValidationError(LeadLexError):
    """400: LeadLex refused the values (permanent; dead-letter with `field_errors`)."""

    @property
    def field_errors(self) -> dict[str, str]:
        """`details.fields` as {field: reason}."""
        return _field_errors(self.details)


class InvalidKeyError(LeadLexError):
    """401: the API key is missing, invalid, expired or revoked."""

    opens_circuit = True


class InsufficientPermissionsError(LeadLexError):
    """403: the key lacks the scope for this call (contacts write/read)."""

    opens_circuit = True


class ContactNotFoundError(LeadLexError):
    """404: the contact does not exist in this workspace (deleted, merged, wrong link)."""


class RateLimitedError(LeadLexError):
    """429: over the per-minute or daily budget; `rate` says how long to wait."""

    retryable = True

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait, when the server said so."""
        return self.rate.retry_after if self.rate else None


class LeadLexServerError(LeadLexError):
    """5xx: LeadLex (or its gateway) failed; the write may have been applied."""

    retryable = True
    maybe_applied = True


class LeadLexTimeoutError(LeadLexError):
    """No answer in time; `maybe_applied` is False only when the request was never sent."""

    retryable = True


class LeadLexConnectionError(LeadLexError):
    """The connection failed; `maybe_applied` is False only when the request was never sent."""

    retryable = True


class UnexpectedResponseError(LeadLexError):
    """An answer this client does not understand (other 3xx/4xx, a non-JSON 2xx)."""


_BY_STATUS: dict[int, type[LeadLexError]] = {
    400: LeadLexValidationError,
    401: InvalidKeyError,
    403: InsufficientPermissionsError,
    404: ContactNotFoundError,
    429: RateLimitedError,
}

# Transport failures that happen before a single byte of the request left this machine.
_NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ---- the client ---------------------------------------------------------------------------


class LeadLexClient:
    """A synchronous LeadLex API client over one pooled httpx.Client (thread-safe)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str = "leadlex-sync/0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key or not _KEY_SHAPE.fullmatch(api_key):
            # Never echo the value: it is a secret.
            raise ValueError("LEADLEX_API_KEY: empty or contains spaces/control characters")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._api_key = api_key
        self._clock = clock
        self.last_rate: RateInfo | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": user_agent,
            },
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"LeadLexClient(base_url={self.base_url!r}, api_key='***')"

    def __enter__(self) -> LeadLexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ---- endpoints ------------------------------------------------------------------------

    def update_contact(
        self,
        contact_id: str,
        fields: Mapping[str, str],
        *,
        idempotency_key: str | None = None,
    ) -> LeadLexResponse:
        """PATCH /v1/contacts/{id} with `fields` (`notes` appends on LeadLex's side).

        `idempotency_key` is sent as `Idempotency-Key`; LeadLex does not document it for
        this endpoint (reference §12 gap 1), so it is a bonus, never a guarantee.
        """
        if not fields:
            raise ValueError("update_contact needs at least one field")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._call("PATCH", _contact_path(contact_id), json=dict(fields), headers=headers)

    def get_contact(self, contact_id: str) -> LeadLexResponse:
        """GET /v1/contacts/{id}."""
        return self._call("GET", _contact_path(contact_id))

    def search_contacts(self, query: str, *, per_page: int = 10) -> LeadLexResponse:
        """GET /v1/contacts?search=... (partial match on name or email); `data.contacts`."""
        if not 1 <= per_page <= 100:
            raise ValueError("per_page must be between 1 and 100")
        return self._call(
            "GET",
            "/v1/contacts",
            params={"search": query, "per_page": per_page},
            list_key="contacts",
        )

    def list_contacts(self, *, page: int = 1, per_page: int = 100) -> LeadLexResponse:
        """GET /v1/contacts?page=&per_page= (oldest first); `data.contacts`, `meta.total`."""
        if not 1 <= per_page <= 100:
            raise ValueError("per_page must be between 1 and 100")
        return self._call(
            "GET",
            "/v1/contacts",
            params={"page": page, "per_page": per_page, "sort": "created_at"},
            list_key="contacts",
        )

    def export_contacts(
        self,
        *,
        fields: Sequence[str] | None = None,
        limit: int = 50_000,
        created_after: str | None = None,
        created_before: str | None = None,
    ) -> LeadLexResponse:
        """GET /v1/contacts/export (CSV, at most 50,000 rows, 10 calls an hour per workspace).

        `created_after` / `created_before`: ISO 8601 bounds (whether they include the bound is
        undocumented). The CSV text is `data["csv"]`. A 2xx that is not CSV is an
        UnexpectedResponseError."""
        if not 1 <= limit <= 50_000:
            raise ValueError("limit must be between 1 and 50000")
        params: dict[str, Any] = {"limit": limit}
        if fields:
            params["fields"] = ",".join(fields)
        if created_after is not None:
            params["created_after"] = created_after
        if created_before is not None:
            params["created_before"] = created_before
        try:
            response = self._http.get(
                "/v1/contacts/export", params=params, headers={"Accept": "text/csv"}
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, "GET", "/v1/contacts/export") from (
                None if self._leaks(exc) else exc
            )
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if 200 <= response.status_code < 300 and kind == "text/csv":
            rate = RateInfo.from_headers(response.headers, now=self._clock())
            self.last_rate = rate
            return LeadLexResponse(
                response.status_code,
                {"csv": response.text},
                rate,
                response.headers.get("x-request-id", ""),
            )
        if 200 <= response.status_code < 300:
            raise UnexpectedResponseError(
                f"{response.status_code} export answer is not CSV ({kind or 'no type'})",
                status=response.status_code,
                code="unexpected_body",
                request_id=response.headers.get("x-request-id", ""),
                rate=RateInfo.from_headers(response.headers, now=self._clock()),
                maybe_applied=False,
            )
        return self._handle("GET", response, "items")

    def create_contact(
        self, fields: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> LeadLexResponse:
        """POST /v1/contacts (LeadLex may answer 200 or 201)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._call("POST", "/v1/contacts", json=dict(fields), headers=headers)

    # ---- plumbing -------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        list_key: str = "items",
    ) -> LeadLexResponse:
        try:
            response = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as exc:  # transport errors, and e.g. DecodingError
            raise self._transport_error(exc, method, path) from (None if self._leaks(exc) else exc)
        return self._handle(method, response, list_key)

    def _leaks(self, exc: BaseException) -> bool:
        return self._api_key in str(exc) or self._api_key in repr(exc)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _scrub_any(self, value: Any) -> Any:
        """`value` with the API key masked in every string it holds (error details)."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, Mapping):
            return {self._scrub(str(k)): self._scrub_any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub_any(v) for v in value]
        return value

    def _transport_error(self, exc: httpx.HTTPError, method: str, path: str) -> LeadLexError:
        sent = not isinstance(exc, _NOT_SENT)
        kind: type[LeadLexError] = (
            LeadLexTimeoutError
            if isinstance(exc, httpx.TimeoutException)
            else LeadLexConnectionError
        )
        detail = self._scrub(str(exc)) or type(exc).__name__
        return kind(
            f"{type(exc).__name__}: {detail} ({method} {path})",
            code=_snake(type(exc).__name__),
            maybe_applied=sent and method != "GET",
        )

    def _handle(self, method: str, response: httpx.Response, list_key: str) -> LeadLexResponse:
        status = response.status_code
        request_id = response.headers.get("x-request-id", "")
        rate = RateInfo.from_headers(response.headers, now=self._clock())
        self.last_rate = rate
        body = _json_body(response)

        if 200 <= status < 300:
            if status == 204 or not response.content:
                return LeadLexResponse(status, {}, rate, request_id)
            if not isinstance(body, dict):
                raise UnexpectedResponseError(
                    f"{status} answer is not a JSON object",
                    status=status,
                    code="unexpected_body",
                    details={"body": self._scrub(response.text[:500])},
                    request_id=request_id,
                    rate=rate,
                    maybe_applied=method != "GET",
                )
            data = body.get("data", body)
            if isinstance(data, list):
                data = {list_key: data}
            elif not isinstance(data, dict):
                data = {"value": data}
            meta = body.get("meta")
            return LeadLexResponse(
                status, data, rate, request_id, meta if isinstance(meta, dict) else {}
            )

        code, message, details = _error_parts(body)
        if not message:
            message = f"{response.reason_phrase or 'HTTP error'}"
            if body is None and response.content:
                message += " (non-JSON body)"
                details.setdefault("body", " ".join(response.text[:500].split()))
        kind: type[LeadLexError]
        if status >= 500:
            kind = LeadLexServerError
        elif status == 404 and not (isinstance(body, dict) and "error" in body):
            # No LeadLex envelope: most likely a wrong LEADLEX_BASE_URL (or a gateway's own
            # 404), not a missing contact; do not dead-letter it as "not_found".
            kind = UnexpectedResponseError
            message += "; not a LeadLex error body, check LEADLEX_BASE_URL"
        else:
            kind = _BY_STATUS.get(status, UnexpectedResponseError)
        raise kind(
            self._scrub(message),
            status=status,
            code=code or f"http_{status}",
            details=self._scrub_any(details),
            request_id=request_id,
            rate=rate,
            maybe_applied=(method != "GET") if kind is LeadLexServerError else None,
        )


def _contact_path(contact_id: str) -> str:
    if not contact_id or contact_id in {".", ".."}:
        raise ValueError("contact id is empty or not a usable path segment")
    return "/v1/contacts/" + quote(contact_id, safe="")


def _json_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None


def _error_parts(body: Any) -> tuple[str, str, dict[str, Any]]:
    """(code, message, details) from `{"error": {...}}`, tolerating other shapes."""
    if not isinstance(body, dict):
        return "", "", {}
    err = body.get("error")
    if isinstance(err, dict):
        details = err.get("details")
        return (
            str(err.get("code") or ""),
            str(err.get("message") or ""),
            dict(details) if isinstance(details, dict) else {},
        )
    if isinstance(err, str):
        return err, str(body.get("message") or ""), {}
    return "", str(body.get("message") or ""), {}


# ---- one client per process ---------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: dict[tuple[str, str, float], LeadLexClient] = {}
_shared_pid = os.getpid()


def _forget_after_fork() -> None:
    # The parent's sockets (and TLS sessions) must not be used, nor closed, by the child.
    global _shared_lock, _shared_pid
    _shared_lock = threading.Lock()
    _shared.clear()
    _shared_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def shared_client(base_url: str, api_key: str, timeout: float = 10.0) -> LeadLexClient:
    """The process's LeadLexClient for these settings, created on first use.

    A forked child (Celery prefork) gets its own: connections are never shared across
    processes. The pid check backs up the at-fork hook.
    """
    global _shared_pid
    with _shared_lock:
        if os.getpid() != _shared_pid:
            _shared.clear()
            _shared_pid = os.getpid()
        key = (base_url, api_key, timeout)
        client = _shared.get(key)
        if client is None or client.closed:
            client = LeadLexClient(base_url, api_key, timeout=timeout)
            _shared[key] = client
        return client
