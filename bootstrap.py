#!/usr/bin/env python3
"""One entry point that needs nothing but Python 3.11+: creates .venv, installs, runs.

    python3 bootstrap.py dev     # receiver + worker + beat + Flower (+ simulator, embedded Redis)
    python3 bootstrap.py test    # ruff, mypy and the whole pytest suite
    python3 bootstrap.py lint | typecheck | unit | integration | bench | install

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


def install() -> None:
    """Create .venv and install the project with its test extra when pyproject changed."""
    if sys.version_info < (3, 11):
        sys.exit("leadlex-sync needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print("+ creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    py = str(BIN / "python")
    for argv in (
        [py, "-m", "pip", "install", "-q", "--upgrade", "pip"],
        # compat mode: a plain .pth entry, so Flask can find package paths from any cwd
        [py, "-m", "pip", "install", "-q", "-e", ".[test]",
         "--config-settings", "editable_mode=compat"],
    ):
        if _run(argv) != 0:
            sys.exit("install failed")
    STAMP.write_text(digest)


def main(argv: list[str]) -> int:
    command, rest = (argv[0], argv[1:]) if argv else ("help", [])
    if command in {"help", "-h", "--help"}:
        print(__doc__)
        return 0
    install()
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
    }
    if command not in steps:
        print(f"bootstrap.py: unknown command {command!r}; try: {', '.join(steps)}", file=sys.stderr)
        return 2
    for step in steps[command]:
        if command == "dev":
            os.execv(step[0], step)
        code = _run(step)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
