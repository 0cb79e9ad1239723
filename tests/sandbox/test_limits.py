"""Rate limits (reference §3, §12.5-§12.7): minute window, daily quota, headers, Retry-After."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from leadlex_sandbox import SandboxConfig
from leadlex_sandbox.limits import RateLimiter
from tests.sandbox.conftest import assert_error, configure, requests_log


def _wait_for_fresh_day(day_seconds: int, margin: float = 0.8) -> None:
    """Sleep until a day boundary when less than `margin` seconds of this "day" remain."""
    left = day_seconds - (time.time() % day_seconds)
    if left < margin:
        time.sleep(left + 0.02)


# ---- pure limiter, with a fake clock


def test_minute_window_slides() -> None:
    """The minute window frees each slot exactly window seconds after that request."""
    config = SandboxConfig(per_minute=3, daily=1000, minute_window_seconds=60)
    limiter = RateLimiter()
    for t in (1000.0, 1010.0, 1020.0):
        assert limiter.check(t, config) is None
        limiter.record(t, config)
    block = limiter.check(1059.0, config)
    assert block is not None
    assert (block.limit, block.retry_after) == ("minute", 1)
    assert limiter.check(1060.5, config) is None  # the 1000.0 hit left the window
    limiter.record(1060.5, config)
    blocked_again = limiter.check(1061.0, config)
    assert blocked_again is not None
    assert blocked_again.retry_after == 9  # 1010 + 60 - 1061


def test_day_resets_on_the_day_boundary() -> None:
    """The daily count resets at the next multiple of day_seconds, as X-RateLimit-Reset says."""
    config = SandboxConfig(per_minute=100, daily=2, day_seconds=86_400)
    limiter = RateLimiter()
    day_start = 1_708_819_200.0  # 2024-02-25T00:00:00Z
    for t in (day_start + 10, day_start + 20):
        limiter.record(t, config)
    quota = limiter.quota(day_start + 30, config)
    assert (quota.limit, quota.remaining, quota.reset) == (2, 0, 1_708_905_600)
    block = limiter.check(day_start + 30, config)
    assert block is not None
    assert block.limit == "daily"
    assert block.retry_after == 86_400 - 30
    assert limiter.check(1_708_905_600.0, config) is None


def test_plan_limits() -> None:
    """Plans map to the documented per-minute and daily limits; explicit values override."""
    limits = {
        p: (SandboxConfig(plan=p).minute_limit, SandboxConfig(plan=p).daily_limit)
        for p in ("starter", "pro", "org")
    }
    assert limits == {"starter": (10, 100), "pro": (50, 1000), "org": (200, 10_000)}
    assert SandboxConfig().minute_limit == 10  # the default plan is the smallest
    assert SandboxConfig(plan="org", per_minute=7).minute_limit == 7


# ---- over HTTP


def test_per_minute_limit_gives_429_with_headers(api: httpx.Client, control: httpx.Client) -> None:
    """After per_minute calls the next is 429 rate_limited with rate headers and no Retry-After."""
    configure(control, per_minute=3, daily=50)
    statuses = [api.get("/v1/contacts").status_code for _ in range(3)]
    response = api.get("/v1/contacts")
    assert statuses == [200, 200, 200]
    assert_error(response, 429, "rate_limited")
    assert "details" not in response.json()["error"]
    assert response.headers["X-RateLimit-Limit"] == "50"
    assert response.headers["X-RateLimit-Remaining"] == "47"  # the 429 did not count
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    assert response.headers["X-Request-ID"].startswith("req_")
    assert "Retry-After" not in response.headers


def test_minute_window_expires(api: httpx.Client, control: httpx.Client) -> None:
    """With a 1 s window, a blocked client may call again once the window has passed."""
    configure(control, per_minute=2, minute_window_seconds=1.0)
    assert [api.get("/v1/contacts").status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(1.05)
    assert api.get("/v1/contacts").status_code == 200


def test_errors_count_toward_the_limit(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """400/404 answers spend quota (stricter), 401/429 do not; count_errors=False spares 4xx."""
    configure(control, per_minute=3, daily=100)
    api.patch(f"/v1/contacts/{contact['id']}", json={"email": "bad"})
    api.get("/v1/contacts/123e4567-e89b-12d3-a456-000000000000")
    with httpx.Client(base_url=api.base_url, timeout=5) as anonymous:
        assert anonymous.get("/v1/contacts").status_code == 401
    assert api.get("/v1/contacts").status_code == 200
    assert_error(api.get("/v1/contacts"), 429, "rate_limited")
    usage = control.get("/_sandbox/limits").json()["data"]
    assert (usage["minute_used"], usage["daily_used"]) == (3, 3)

    control.post("/_sandbox/reset")
    configure(control, per_minute=2, count_errors=False)
    for _ in range(5):
        assert api.get("/v1/contacts/123e4567-e89b-12d3-a456-000000000000").status_code == 404
    assert api.get("/v1/contacts").status_code == 200


def test_daily_quota_with_a_short_day(api: httpx.Client, control: httpx.Client) -> None:
    """With day_seconds=2 the quota runs out, Reset names the boundary, the next day passes."""
    configure(control, daily=3, day_seconds=2)
    _wait_for_fresh_day(2)
    ok = [api.get("/v1/contacts") for _ in range(3)]
    blocked = api.get("/v1/contacts")
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in ok] == ["2", "1", "0"]
    assert_error(blocked, 429, "rate_limited")
    reset = int(blocked.headers["X-RateLimit-Reset"])
    assert reset % 2 == 0
    assert 0 < reset - time.time() <= 2
    time.sleep(max(0.0, reset - time.time()) + 0.05)
    fresh = api.get("/v1/contacts")
    assert fresh.status_code == 200
    assert fresh.headers["X-RateLimit-Remaining"] == "2"


def test_retry_after_knob_minute(api: httpx.Client, control: httpx.Client) -> None:
    """With retry_after on, a minute-limited 429 has Retry-After = seconds until a slot frees."""
    configure(control, per_minute=1, minute_window_seconds=5, retry_after=True)
    assert api.get("/v1/contacts").status_code == 200
    response = api.get("/v1/contacts")
    assert response.status_code == 429
    assert 4 <= int(response.headers["Retry-After"]) <= 5


def test_retry_after_knob_daily(api: httpx.Client, control: httpx.Client) -> None:
    """With retry_after on, a day-limited 429 carries Retry-After = seconds until the day resets."""
    configure(control, daily=1, day_seconds=30, retry_after=True)
    _wait_for_fresh_day(30, margin=3)
    assert api.get("/v1/contacts").status_code == 200
    response = api.get("/v1/contacts")
    assert response.status_code == 429
    wait = int(response.headers["X-RateLimit-Reset"]) - time.time()
    assert abs(int(response.headers["Retry-After"]) - wait) <= 1.5


def test_rate_limited_requests_are_logged_but_not_applied(
    api: httpx.Client, control: httpx.Client, contact: dict[str, Any]
) -> None:
    """A 429 PATCH is in the request log with status 429 and applied false, and changes nothing."""
    configure(control, per_minute=1)
    api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "one"})
    response = api.patch(f"/v1/contacts/{contact['id']}", json={"notes": "two"})
    assert response.status_code == 429
    log = requests_log(control)
    assert [(e["status"], e["applied"]) for e in log] == [(200, True), (429, False)]
    stored = control.get(f"/_sandbox/contacts/{contact['id']}").json()["data"]
    assert stored["notes"] == "Met at conference.\none"


@pytest.mark.parametrize("plan", ["starter", "pro"])
def test_plan_knob_over_http(api: httpx.Client, control: httpx.Client, plan: str) -> None:
    """With explicit limits cleared, X-RateLimit-Limit is the chosen plan's daily quota."""
    configure(control, plan=plan, per_minute=None, daily=None)
    expected = {"starter": "100", "pro": "1000"}[plan]
    assert api.get("/v1/contacts").headers["X-RateLimit-Limit"] == expected
