"""A Celery app for tests: the real worker, except that its process dies right after
LeadLex's 2xx to a PATCH, before the commit (through the Runtime's test seam).

Start it with `celery -A tests.integration.crashing_worker worker ...` (the `workers`
fixture's `app=` argument)."""

from __future__ import annotations

import os

from worker import app, tasks


def _crash_after_answer(point: str, contact: str) -> None:
    if point == "after_answer":
        os._exit(137)


tasks.runtime_seam = _crash_after_answer

__all__ = ["app"]
