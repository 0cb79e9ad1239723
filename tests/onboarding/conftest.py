"""Fixtures of the onboarding tests: a simulator and an in-process pipeline Runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from leadlex_sandbox import SandboxServer
from leadlex_sandbox.config import SandboxConfig
from worker import pipeline
from worker.leadlex import LeadLexClient
from worker.mapping import default_mapping
from worker.settings import load_settings

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
    clients: list[LeadLexClient] = []

    def build(**kw: Any) -> pipeline.Runtime:
        env = {
            "REDIS_URL": redis_url,
            "LEADLEX_API_KEY": API_KEY,
            "LEADLEX_PLAN": "org",
            "LEADLEX_BASE_URL": leadlex.base_url,
            "COALESCE_SECONDS": "0",
            **kw.pop("env", {}),
        }
        settings = load_settings(env, env_file=None)
        client = LeadLexClient(leadlex.base_url, API_KEY, timeout=5)
        clients.append(client)
        return pipeline.Runtime(
            settings=settings,
            redis=redis.Redis.from_url(redis_url),
            mapping=default_mapping(),
            client_factory=lambda: client,
            **kw,
        )

    yield build
    for client in clients:
        client.close()


def flush_all(rt: pipeline.Runtime) -> None:
    """Flush every contact with staged changes now (what the dispatched tasks would do)."""
    for contact in rt.redis.zrange("lls:due", 0, -1):
        pipeline.flush(rt, contact.decode())
