"""Fixtures for the deployment tests: logging state restored after each test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

ROOT = Path(__file__).resolve().parents[2]

_TOUCHED = (
    "gunicorn.error",
    "gunicorn.access",
    "celery",
    "celery.task",
    "celery.redirected",
    "celery.beat",
    "werkzeug",
    "httpx",
    "httpcore",
)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger, the loggers configure_logging touches and structlog back."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    saved = {
        name: (list(lg.handlers), lg.level, lg.propagate)
        for name in _TOUCHED
        for lg in [logging.getLogger(name)]
    }
    yield
    for handler in root.handlers[:]:
        if handler not in saved_root[0]:
            root.removeHandler(handler)
    for handler in saved_root[0]:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(saved_root[1])
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
    structlog.reset_defaults()
