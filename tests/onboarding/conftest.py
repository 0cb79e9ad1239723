"""Fixtures of the onboarding tests: a simulator and an in-process pipeline Runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from leadlex_sandbox import SandboxServer
from leadlex_sandbox.config import SandboxConfig
from tests.integration.support import runtime_factory
from worker import pipeline

API_KEY = "wbk_test_onboarding_key_0123456789"


@pytest.fixture
def leadlex() -> Iterator[SandboxServer]:
    """A LeadLex simulator on a free loopback port, Org limits, our key."""
    config = SandboxConfig(api_keys={API_KEY: frozenset({"read", "write"})}, plan="org")
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def make_runtime(
    redis_url: str, leadlex: SandboxServer
) -> Iterator[Callable[..., pipeline.Runtime]]:
    """Build a pipeline Runtime on the test Redis and the simulator (dispatches recorded)."""
    with runtime_factory(redis_url, leadlex.base_url, API_KEY) as build:
        yield build


def flush_all(rt: pipeline.Runtime) -> None:
    """Flush every contact with staged changes now (what the dispatched tasks would do)."""
    for contact in rt.redis.zrange("lls:due", 0, -1):
        pipeline.flush(rt, contact.decode())
