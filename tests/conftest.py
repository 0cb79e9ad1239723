"""Shared fixtures: a real Redis of the suite's own (a private redis-server it starts),
or the one named by LLS_TEST_REDIS_URL. The suite never touches any other Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from worker.embedded_redis import RedisServer, redis_answers

# Each test run uses one Redis database, flushed before every test that asks for it. By
# default that is db 15 of a redis-server this session starts on a free loopback port; set
# LLS_TEST_REDIS_URL only to a Redis (and db) the suite may flush.


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """URL of the suite's Redis: LLS_TEST_REDIS_URL when set, else a private redis-server."""
    url = os.environ.get("LLS_TEST_REDIS_URL")
    if url:
        if not redis_answers(url):
            pytest.exit(f"LLS_TEST_REDIS_URL does not answer: {url}", returncode=2)
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
