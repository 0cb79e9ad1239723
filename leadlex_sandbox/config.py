"""SandboxConfig: every knob of the simulator, with defaults, and its JSON round trip.

The config is frozen; the running sandbox swaps in a new one (`updated`) when a
control endpoint changes knobs, so a request always sees one consistent config.
`updated` takes JSON-shaped values (what `POST /_sandbox/config` receives), checks
each one and raises `ConfigError` naming the first bad knob.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Plan = Literal["starter", "pro", "org"]
DuplicateEmailPolicy = Literal["reject", "allow"]
LateAnswer = Literal["timeout", "error", "drop"]

# reference/leadlex-api.md §3: plan -> (per minute, per day).
PLANS: dict[str, tuple[int, int]] = {
    "starter": (10, 100),
    "pro": (50, 1_000),
    "org": (200, 10_000),
}

DEFAULT_API_KEY = "wbk_sandbox_0000000000000000000000000000000000000000000000000000"
READ_WRITE: frozenset[str] = frozenset({"read", "write"})
READ_ONLY: frozenset[str] = frozenset({"read"})
PERMISSIONS: frozenset[str] = READ_WRITE

# Knobs that `POST /_sandbox/faults` may change (a subset of all knobs).
FAULT_KNOBS: frozenset[str] = frozenset(
    {
        "latency_ms",
        "error_rate_5xx",
        "error_statuses",
        "error_methods",
        "drop_after_apply_rate",
        "force_429",
        "force_429_retry_after_seconds",
        "late_apply_seconds",
        "late_apply_answer",
        "late_apply_writes",
        "non_json_answer_rate",
        "seed",
    }
)


class ConfigError(ValueError):
    """A knob has a bad value; `knob` names it, str(self) says why."""

    def __init__(self, knob: str, reason: str) -> None:
        super().__init__(f"{knob}: {reason}")
        self.knob = knob
        self.reason = reason


def _default_keys() -> dict[str, frozenset[str]]:
    return {DEFAULT_API_KEY: READ_WRITE}


@dataclass(frozen=True)
class SandboxConfig:
    """Every behaviour of the simulator that the LeadLex docs leave open, plus faults."""

    # --- auth (reference §2): key -> permissions ("read", "write")
    api_keys: Mapping[str, frozenset[str]] = field(default_factory=_default_keys)

    # --- rate limits (reference §3); per_minute / daily override the plan when set
    plan: Plan = "starter"
    per_minute: int | None = None
    daily: int | None = None
    day_seconds: int = 86_400  # days are multiples of this since the epoch (86400 = UTC midnight)
    minute_window_seconds: float = 60.0  # sliding window length
    retry_after: bool = False  # send Retry-After on 429 (docs never mention it)
    count_errors: bool = True  # 4xx/5xx answers (except 401 and 429) spend quota

    # --- writes
    honor_idempotency_key: bool = False  # PATCH and POST dedupe on Idempotency-Key when True
    idempotency_ttl_seconds: float = 86_400.0
    idempotency_conflict_status: int = 409  # same key, different request
    expose_notes: bool = False  # docs: notes is write-only; the seed page shows it in PATCH
    notes_separator: str = "\n"
    notes_max_length: int = 10_000  # per append
    max_field_length: int = 255
    reject_unknown_fields: bool = True
    reject_null: bool = True  # null -> 400 (False: null clears the field)
    reject_empty_string: bool = True  # "" -> 400 (False: "" clears the field)
    reject_empty_body: bool = True  # PATCH {} -> 400
    require_json_content_type: bool = True  # writes need Content-Type: application/json
    create_status: int = 201
    duplicate_email: DuplicateEmailPolicy = "reject"  # POST with a known email -> 409

    # --- export (reference §7.8): its own limit per sliding window, on top of the plan's
    export_per_hour: int = 10
    export_window_seconds: float = 3_600.0
    # Undocumented (§7.8): the rows' order ("shuffled": any subset of the matches, in any
    # order, so a test proves a client does not depend on it) and whether `created_after` /
    # `created_before` include their bound.
    export_order: Literal["insertion", "shuffled"] = "insertion"
    export_bounds_inclusive: bool = False

    # --- faults
    latency_ms: int = 0
    error_rate_5xx: float = 0.0  # answer 5xx (without applying) with this probability
    error_statuses: tuple[int, ...] = (500, 502, 503)
    error_methods: tuple[str, ...] = ("GET", "POST", "PATCH", "PUT", "DELETE")  # 5xx only these
    drop_after_apply_rate: float = 0.0  # apply a write, then close the socket unanswered
    force_429: int = 0  # the next N authenticated requests answer 429
    force_429_retry_after_seconds: int | None = None  # set: forced 429s send Retry-After: S
    # A write (PATCH, POST) is applied this many seconds after it arrived, after the client
    # was answered per `late_apply_answer`: "timeout" holds the answer until the write is
    # applied (a client with a shorter timeout has given up), "error" answers 503 at once,
    # "drop" closes the connection at once. 0 = off.
    late_apply_seconds: float = 0.0
    late_apply_answer: LateAnswer = "timeout"
    late_apply_writes: int | None = None  # None: every write; N: only the next N writes
    non_json_answer_rate: float = 0.0  # apply a write, then answer 200 with a non-JSON body
    seed: int | None = None  # RNG seed for the fault dice (None: from the OS)

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            value = check(name, getattr(self, name))
            object.__setattr__(self, name, value)

    @property
    def minute_limit(self) -> int:
        """Requests allowed in any sliding window of `minute_window_seconds`."""
        return self.per_minute if self.per_minute is not None else PLANS[self.plan][0]

    @property
    def daily_limit(self) -> int:
        """Requests allowed per day (the value of X-RateLimit-Limit)."""
        return self.daily if self.daily is not None else PLANS[self.plan][1]

    def permissions(self, api_key: str) -> frozenset[str] | None:
        """The permissions of a key, or None when the key is unknown."""
        return self.api_keys.get(api_key)

    def updated(
        self, changes: Mapping[str, Any], *, allowed: frozenset[str] | None = None
    ) -> SandboxConfig:
        """A copy with `changes` (JSON-shaped values) applied; unknown or bad knobs raise."""
        names = allowed if allowed is not None else frozenset(_CHECKS)
        for name in changes:
            if name not in names:
                raise ConfigError(name, "unknown knob")
        return dataclasses.replace(self, **dict(changes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-shaped view of every knob plus the effective limits."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_keys":
                value = {k: sorted(v) for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["limits"] = {"per_minute": self.minute_limit, "daily": self.daily_limit}
        return out


# ---- checks: each takes (knob, value) and returns the normalized value or raises


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, "must be true or false")
    return value


def _int(low: int, high: int | None = None, *, optional: bool = False) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, "must be an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigError(name, f"must be {bound}")
        return value

    return check


def _number(
    low: float, high: float | None = None, *, open_low: bool = False
) -> Callable[[str, Any], float]:
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, "must be a number")
        number = float(value)
        too_low = number <= low if open_low else number < low
        if not math.isfinite(number) or too_low or (high is not None and number > high):
            raise ConfigError(
                name,
                f"must be {'>' if open_low else '>='} {low}"
                + (f" and <= {high}" if high is not None else ""),
            )
        return number

    return check


def _choice(*options: Any) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            raise ConfigError(name, f"must be one of {', '.join(map(str, options))}")
        return value

    return check


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, "must be a string")
    return value


def _api_keys(name: str, value: Any) -> dict[str, frozenset[str]]:
    if not isinstance(value, Mapping):
        raise ConfigError(name, "must map each key to a list of permissions")
    keys: dict[str, frozenset[str]] = {}
    for key, perms in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(name, "keys must be non-empty strings")
        if isinstance(perms, str) or not isinstance(perms, list | tuple | set | frozenset):
            raise ConfigError(name, f"permissions of a key must be a list of {sorted(PERMISSIONS)}")
        bad = [p for p in perms if p not in PERMISSIONS]
        if bad:
            raise ConfigError(name, f"unknown permission {bad[0]!r}")
        keys[key] = frozenset(perms)
    return keys


def _statuses(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(name, "must be a non-empty list of 5xx statuses")
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 500 <= status <= 599:
            raise ConfigError(name, "must be a non-empty list of 5xx statuses")
    return tuple(value)


def _methods(name: str, value: Any) -> tuple[str, ...]:
    allowed = ("GET", "POST", "PATCH", "PUT", "DELETE")
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(name, f"must be a non-empty list of {', '.join(allowed)}")
    for method in value:
        if method not in allowed:
            raise ConfigError(name, f"must be a non-empty list of {', '.join(allowed)}")
    return tuple(value)


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "api_keys": _api_keys,
    "plan": _choice(*PLANS),
    "per_minute": _int(1, optional=True),
    "daily": _int(1, optional=True),
    "day_seconds": _int(1),
    "minute_window_seconds": _number(0.0, open_low=True),
    "retry_after": _bool,
    "count_errors": _bool,
    "honor_idempotency_key": _bool,
    "idempotency_ttl_seconds": _number(0.0, open_low=True),
    "idempotency_conflict_status": _choice(400, 409, 422),
    "expose_notes": _bool,
    "notes_separator": _string,
    "notes_max_length": _int(1),
    "max_field_length": _int(1),
    "reject_unknown_fields": _bool,
    "reject_null": _bool,
    "reject_empty_string": _bool,
    "reject_empty_body": _bool,
    "require_json_content_type": _bool,
    "create_status": _choice(200, 201),
    "duplicate_email": _choice("reject", "allow"),
    "export_per_hour": _int(0),
    "export_window_seconds": _number(0, open_low=True),
    "export_order": _choice("insertion", "shuffled"),
    "export_bounds_inclusive": _bool,
    "latency_ms": _int(0, 60_000),
    "error_rate_5xx": _number(0.0, 1.0),
    "error_statuses": _statuses,
    "error_methods": _methods,
    "drop_after_apply_rate": _number(0.0, 1.0),
    "force_429": _int(0),
    "force_429_retry_after_seconds": _int(1, optional=True),
    "late_apply_seconds": _number(0.0, 600.0),
    "late_apply_answer": _choice("timeout", "error", "drop"),
    "late_apply_writes": _int(0, optional=True),
    "non_json_answer_rate": _number(0.0, 1.0),
    "seed": _int(-(2**63), optional=True),
}

# Every knob name (the fields of SandboxConfig).
KNOBS: frozenset[str] = frozenset(_CHECKS)
