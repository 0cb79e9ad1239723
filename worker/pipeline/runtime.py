"""The Runtime every stage is given, and the small pieces all stages share."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from worker.clock import RedisClock
from worker.deadletter import DeadLetters
from worker.leadlex import (
    LeadLexClient,
    LeadLexConnectionError,
    LeadLexError,
    RateInfo,
    RateLimitedError,
)
from worker.mapping import MappingConfig
from worker.metrics import Metrics
from worker.ratelimit import Budget, Circuit, GrantLapsedError
from worker.settings import Settings
from worker.state import State

log = logging.getLogger("leadlex_sync.worker")


def redis_clock() -> float:
    """Default of `Runtime.clock`: replaced by a `RedisClock` on the Runtime's Redis."""
    raise RuntimeError("Runtime.clock was not set up")  # pragma: no cover


@dataclass
class Runtime:
    """Everything the pipeline needs, built once per worker process (tests build their own).

    `clock` (epoch seconds) decides every time compared across processes: due times, the
    pump, retry age, parking, the inbox sweep, when a PATCH was sent. By default it is
    Redis's clock (`worker.clock.RedisClock`), never this machine's; the budget and the
    circuit read Redis TIME in their own scripts. A test may pass a fake clock instead: the
    budget and the circuit then use it too (see docs/architecture.md, "One clock").
    """

    settings: Settings
    redis: redis.Redis
    mapping: MappingConfig
    client_factory: Callable[[], LeadLexClient]
    dispatch_flush: Callable[[str, float], None] = lambda contact, countdown: None
    # Several flushes with one countdown in one go (an ingest batch's newly due contacts);
    # None: `dispatch_flush` for each (see `dispatch_flush_many`).
    dispatch_flushes: Callable[[list[str], float], None] | None = None
    dispatch_ingest: Callable[[list[dict[str, Any]]], None] = lambda events: None
    clock: Callable[[], float] = redis_clock
    lease_seconds: float = 60.0
    # Test seam: called at named points of a flush ("before_arm": right before the lease
    # re-check and the PATCH; "after_answer": after LeadLex's 2xx, before the commit) with
    # (point, contact). Production leaves it a no-op; tests stall or crash there.
    seam: Callable[[str, str], None] = lambda point, contact: None
    state: State = field(init=False)
    dlq: DeadLetters = field(init=False)
    metrics: Metrics = field(init=False)
    budget: Budget = field(init=False)
    circuit: Circuit = field(init=False)

    def __post_init__(self) -> None:
        test_clock: Callable[[], float] | None = self.clock
        if self.clock is redis_clock:
            self.clock = RedisClock(self.redis)
            test_clock = None  # budget and circuit read Redis TIME inside their scripts
        self.state = State(self.redis)
        self.dlq = DeadLetters(self.redis)
        self.metrics = Metrics(self.redis)
        self.budget = Budget(
            self.redis,
            self.settings.rate_per_minute,
            self.settings.daily_limit,
            window_seconds=self.settings.leadlex_rate_window_seconds,
            safety_seconds=self.settings.leadlex_rate_margin_seconds,
            # The longest a request can take to reach LeadLex: the client's timeout phases.
            flight_seconds=3 * self.settings.leadlex_timeout_seconds + 2,
            clock=test_clock,
        )
        self.circuit = Circuit(
            self.redis, probe_interval=self.settings.circuit_probe_seconds, clock=test_clock
        )

    def dispatch_flush_many(self, contacts: list[str], countdown: float) -> None:
        """Dispatch a flush for each of `contacts` (one round trip when the process set
        `dispatch_flushes`, as the Celery worker does)."""
        if not contacts:
            return
        if self.dispatch_flushes is None:
            for contact in contacts:
                self.dispatch_flush(contact, countdown)
        else:
            self.dispatch_flushes(contacts, countdown)

    @property
    def client(self) -> LeadLexClient:
        return cast(LeadLexClient, _CountedClient(self.client_factory(), self.metrics, self.budget))


class _CountedClient:
    """Counts every LeadLex call by method and status in the shared metrics, confirms the
    thread's budget grant right before the call leaves (`Budget.confirm`: a grant taken
    before a stall takes a fresh slot, or the call is not made and fails like one that
    never left: `LeadLexConnectionError`, code `budget_lapsed`, not maybe applied), and
    tells the budget when it was answered (`Budget.landed`)."""

    METHODS = {
        "update_contact": "PATCH",
        "get_contact": "GET",
        "search_contacts": "GET",
        "list_contacts": "GET",
        "export_contacts": "GET",
        "create_contact": "POST",
    }

    def __init__(self, client: LeadLexClient, metrics: Metrics, budget: Budget) -> None:
        self._client = client
        self._metrics = metrics
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._client, name)
        method = self.METHODS.get(name)
        if method is None:
            return fn

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                self._budget.confirm()
            except GrantLapsedError as lapsed:
                self._metrics.incr("budget_grants_lapsed")
                raise LeadLexConnectionError(
                    f"budget grant lapsed before the call left ({method}); next slot at "
                    f"{lapsed.retry_at:.3f}",
                    code="budget_lapsed",
                    maybe_applied=False,
                ) from lapsed
            try:
                resp = fn(*args, **kwargs)
            except LeadLexError as err:
                self._budget.landed(answered=err.status is not None)
                status = str(err.status) if err.status else "no_answer"
                self._metrics.incr("leadlex_calls", method=method, status=status)
                raise
            except BaseException:
                self._budget.landed(answered=False)
                raise
            self._budget.landed(answered=True)
            self._metrics.incr("leadlex_calls", method=method, status=str(resp.status))
            return resp

        return call


@dataclass
class FlushOutcome:
    """What one flush did (returned for logs and tests)."""

    outcome: str
    fields: list[str] = field(default_factory=list)
    status: int | None = None
    request_id: str = ""
    coalesced: int = 0


# Waits for budget are re-checked at least once a lease: what blocks may end sooner than
# it said (LeadLex's X-RateLimit-Reset arrives after the refusal; a pause is cleared), and a
# re-check costs Redis work only, never a LeadLex call.
_RECHECKED = frozenset({"minute", "daily", "paused", "budget"})


def flush_lease_seconds(rt: Runtime) -> float:
    """How long a flush's fenced lease lives after each (re)arm: longer than one LeadLex call
    can take with the client's timeouts (connect, write and read phases are each bounded by
    LEADLEX_TIMEOUT_SECONDS), plus a margin for the Redis steps around it."""
    return 3 * rt.settings.leadlex_timeout_seconds + 2


def settle_due(rt: Runtime, intent: dict[str, Any]) -> float:
    """When a write of unknown outcome may be settled: once a late apply can no longer land."""
    return (
        float(intent.get("sent_at") or 0)
        + rt.settings.leadlex_timeout_seconds
        + rt.settings.notes_settle_delay_seconds
    )


def park(rt: Runtime, contact: str, until: float, reason: str) -> None:
    wait = max(0.05, until - rt.clock())
    if reason in _RECHECKED:
        wait = min(wait, rt.lease_seconds)
    rt.state.lease(contact, wait)
    rt.metrics.incr("flushes_parked", reason=reason)


# Flushes the minute window refused are woken for exactly when a slot frees (issue 14):
# up to `per_minute` per moment (slots free together when calls went out together); the
# others wait for the pump (every second), which alone would delay every slot by up to a
# second: 8-16 % of a 6 s window's budget.
BUDGET_WAKER_KEY = "lls:budget:waker:{at_ms}"


def park_for_budget(rt: Runtime, contact: str, retry_at: float, reason: str) -> None:
    """Park a flush the budget refused; for a refusal of the minute window, the first
    `per_minute` such flushes for that moment also dispatch themselves for exactly when the
    slot frees (a countdown no longer than the rate window and half the visibility timeout:
    invariant 7). A woken flush that finds no slot free parks again: Redis work, no call."""
    park(rt, contact, retry_at, reason)
    if reason != "minute":
        return
    wait = retry_at - rt.clock()
    cap = min(
        rt.settings.leadlex_rate_window_seconds + 1,
        rt.settings.visibility_timeout_seconds / 2,
    )
    if not 0 < wait <= cap:
        return
    key = BUDGET_WAKER_KEY.format(at_ms=int(retry_at * 1000))
    pipe = rt.redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.pexpire(key, max(1, int(wait * 1000)) + 1000)
    woken, _ = pipe.execute()
    if int(woken) <= rt.settings.rate_per_minute:
        rt.dispatch_flush(contact, wait)


def observe_error(rt: Runtime, err: LeadLexError) -> None:
    if err.rate is not None:
        rt.budget.observe(err.rate)
    if isinstance(err, RateLimitedError):
        rt.metrics.incr("leadlex_429")
        rt.budget.on_rate_limited(err.rate or RateInfo())
    elif getattr(err, "opens_circuit", False):
        rt.circuit.open(err.code or "unauthorized", str(err))


def budgeted_call(rt: Runtime, call: Callable[[LeadLexClient], Any]) -> Any:
    """One resolution call under the shared budget; None when refused or failed."""
    if not rt.budget.acquire().ok:
        return None
    try:
        resp = call(rt.client)
    except LeadLexError as err:
        observe_error(rt, err)
        return None
    rt.budget.observe(resp.rate)
    return resp
