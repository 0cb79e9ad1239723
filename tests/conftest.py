"""Shared fixtures: a real Redis (the machine's, or an embedded one when none answers)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from worker.embedded_redis import RedisServer, redis_answers

# Each test run uses one Redis database, flushed before every test that asks for it.
# Set LLS_TEST_REDIS_URL to run several suites side by side on one server (other db numbers).
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """URL of a Redis that answers: LLS_TEST_REDIS_URL / 127.0.0.1:6379, else an embedded one."""
    url = os.environ.get("LLS_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    if redis_answers(url):
        yield url
        return
    server = RedisServer(appendonly=False).start()
    try:
        yield server.url.rsplit("/", 1)[0] + "/15"
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    """The test Redis URL, with its database emptied first."""
    client = redis.Redis.from_url(redis_base_url)
    client.flushdb()
    client.close()
    return redis_base_url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the (emptied) test database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ is marked `integration` (select with -m)."""
    for item in items:
        if "/tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)
