"""Test seams: ways for tests and the chaos run to put a real process in a hostile world
without fault hooks in the product's hot path.

`clock_offset_env(seconds)` returns the environment that makes a Python process (a Celery
worker, beat) start with its wall clock `seconds` off, like a machine whose clock is wrong:
`clock_offset/sitecustomize.py` is imported by the interpreter before anything else and
shifts `time.time` and `time.time_ns` by `LLS_TEST_CLOCK_OFFSET_SECONDS`, read once. Every
module imported afterwards (the product, Celery, kombu) reads the shifted clock; the
monotonic clock and Redis `TIME` are untouched, as on a real machine with a wrong wall
clock. `datetime.now()` is not shifted (C code that Python cannot patch).
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_OFFSET_DIR = Path(__file__).resolve().parent / "clock_offset"
CLOCK_OFFSET_VAR = "LLS_TEST_CLOCK_OFFSET_SECONDS"
CLOCK_OFFSET_BANNER = "lls test seam: wall clock offset"


def clock_offset_env(seconds: float, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment additions that start a Python child with its wall clock `seconds` off."""
    path = (base or {}).get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    return {
        CLOCK_OFFSET_VAR: f"{seconds:g}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(CLOCK_OFFSET_DIR), path) if p),
    }
