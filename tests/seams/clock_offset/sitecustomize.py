"""Test seam (tests/seams/__init__.py): start this interpreter with its wall clock off.

Python imports `sitecustomize` before any other module when it is on PYTHONPATH, so
every later `import time` / `from time import time` sees the shifted functions. Only
active when LLS_TEST_CLOCK_OFFSET_SECONDS is set (read once, here); prints one line on
stderr so a test can see that the seam was in effect.
"""

import os
import sys
import time

_raw = os.environ.get("LLS_TEST_CLOCK_OFFSET_SECONDS", "")
if _raw:
    _offset = float(_raw)
    _offset_ns = int(_offset * 1_000_000_000)
    _real_time = time.time
    _real_time_ns = time.time_ns

    def _shifted_time() -> float:
        return _real_time() + _offset

    def _shifted_time_ns() -> int:
        return _real_time_ns() + _offset_ns

    time.time = _shifted_time
    time.time_ns = _shifted_time_ns
    print(
        f"lls test seam: wall clock offset {_offset:+g} s (pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
