"""Receiver fixtures: settings with every source configured, the app and its test client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.receiver.senders import make_settings
from webhook_app import create_app
from webhook_app.intake import EXTENSION
from worker.embedded_redis import RedisServer
from worker.settings import Settings


def close_app(app: Flask) -> None:
    """Release the app's Redis connections."""
    app.extensions[EXTENSION].redis.close()


@pytest.fixture
def settings(redis_url: str) -> Settings:
    """Settings pointing at the emptied test Redis, every source configured."""
    return make_settings(redis_url)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """A fresh receiver app."""
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the receiver app."""
    return app.test_client()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill, restart or reconfigure."""
    with RedisServer(appendonly=False) as server:
        yield server
