"""A Celery app for the chaos run: the real worker, except that one flush in
`LLS_TEST_STALL_EVERY` stalls for `LLS_TEST_STALL_SECONDS` right before its lease re-check
and PATCH, like a GC pause, a VM freeze or a slow DNS lookup (issue 10, scenario 6).

It uses the pipeline's test seam (`worker.tasks.runtime_seam`, called at named points of a
flush; "before_arm" is the moment before the PATCH). Both variables are read once, here.
Start it with `celery -A tests.seams.stalling_worker worker ...` (ROOT on PYTHONPATH).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

from worker import app, tasks

EVERY = int(os.environ.get("LLS_TEST_STALL_EVERY", "0") or 0)
SECONDS = float(os.environ.get("LLS_TEST_STALL_SECONDS", "0") or 0)
_count = itertools.count(1)
_lock = threading.Lock()
log = logging.getLogger("leadlex_sync.test_seam")


def _stall_before_patch(point: str, contact: str) -> None:
    if point != "before_arm" or EVERY <= 0 or SECONDS <= 0:
        return
    with _lock:
        n = next(_count)
    if n % EVERY == 0:
        log.warning("test seam: flush stalls before its PATCH", extra={"contact": contact})
        time.sleep(SECONDS)


tasks.runtime_seam = _stall_before_patch

__all__ = ["app"]
