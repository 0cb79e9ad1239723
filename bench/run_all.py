"""Run every benchmark, collect their JSON, write docs/benchmarks.md and docs/img/*.png.

    .venv/bin/python bench/run_all.py [--only receiver,worker] [--full] [--save out.json]

Runs bench/receiver.py, bench/worker.py, bench/budget.py and, when it exists,
bench/chaos.py (`--short` unless `--full`) one after the other as subprocesses, each
killed after its time limit, all traffic on 127.0.0.1. Then renders the report with
bench/report.py (matplotlib, Agg backend) and prints a JSON summary: each benchmark's
status and every target's verdict. Exit status 1 when a benchmark failed to produce JSON
(targets that are not met do not fail the run: the report says so).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:  # `python bench/run_all.py` puts bench/ first, not the project
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402

ORDER = ("receiver", "worker", "budget", "budget60", "chaos")
# Each benchmark's own bounds are below these (chaos --short: ~345 s hard bound; full ~690 s).
DEFAULT_TIMEOUTS = {
    "receiver": 300.0,
    "worker": 600.0,
    "budget": 900.0,
    "budget60": 600.0,
    "chaos": 500.0,
}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg": load,
    }


def parse_json(stdout: str) -> Any:
    """The JSON document a benchmark printed (the last one, if it printed other lines too)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    found = None
    for i, ch in enumerate(text):
        if ch == "{" and (i == 0 or text[i - 1] == "\n"):
            try:
                found, _end = decoder.raw_decode(text, i)
            except ValueError:
                continue
    return found


def run_bench(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark as a subprocess (its own process group), bounded by `timeout`."""
    print(f"+ {' '.join(argv)}   (limit {timeout:g} s)", file=sys.stderr, flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the benchmark and the servers it started
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        status = f"timeout after {timeout:g} s"
    seconds = round(time.monotonic() - started, 1)
    result = parse_json(stdout)
    if result is None and status == "ok":
        status = "no JSON on stdout"
    print(f"  {name}: {status} in {seconds} s", file=sys.stderr, flush=True)
    return {
        "argv": [
            Path(argv[0]).name,
            *(os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in argv[1:]),
        ],
        "status": status,
        "seconds": seconds,
        "result": result,
        "stderr_tail": "\n".join(stderr.strip().splitlines()[-15:]),
    }


def _help_text(script: Path) -> str:
    try:
        out = subprocess.run(
            [sys.executable, str(script), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout


def _redis_arg(url: str | None) -> list[str]:
    """`--redis-url URL` when one was given; else each benchmark starts a private server."""
    return ["--redis-url", url] if url else []


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """argv of each benchmark to run (chaos only when bench/chaos.py exists)."""
    py = sys.executable
    cmds = {
        "receiver": [
            py,
            str(BENCH / "receiver.py"),
            *_redis_arg(args.receiver_redis_url),
            "--seconds",
            str(args.receiver_seconds),
        ],
        "worker": [py, str(BENCH / "worker.py"), *_redis_arg(args.redis_url), "--loaded"],
        "budget": [py, str(BENCH / "budget.py"), *_redis_arg(args.redis_url)],
        # LeadLex's real 60 s window (issue 14: >= 0.98), leadlex-sync only: ~3.5 minutes.
        "budget60": [
            py,
            str(BENCH / "budget.py"),
            *_redis_arg(args.redis_url),
            *("--skip-naive", "--window", "60", "--per-window", "30"),
            *("--contacts", "90", "--edits", "2", "--wave-gap", "20", "--phase-timeout", "400"),
        ],
    }
    chaos = BENCH / "chaos.py"
    if chaos.exists():
        helptext = _help_text(chaos)
        argv = [py, str(chaos)]
        if not args.full and "--short" in helptext:
            argv.append("--short")
        if "--redis-url" in helptext:
            argv += _redis_arg(args.chaos_redis_url)
        cmds["chaos"] = argv
    return cmds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(ORDER), help="comma-separated subset of: " + ", ".join(ORDER)
    )
    parser.add_argument("--full", action="store_true", help="chaos run in full (not --short)")
    parser.add_argument(
        "--receiver-redis-url",
        default=None,
        help="empty database for bench/receiver.py (default: its own private redis-server)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="database worker.py and budget.py flush and use (default: private servers)",
    )
    parser.add_argument("--chaos-redis-url", default=None, help="default: chaos.py's own server")
    parser.add_argument("--receiver-seconds", type=float, default=5.0, help="per phase")
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every benchmark's time limit"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        help="results JSON of an earlier run (--save); benches not in --only "
        "are taken from it instead of being run",
    )
    parser.add_argument("--save", type=Path, help="also write the collected results here")
    parser.add_argument("--no-report", action="store_true", help="only print the JSON")
    args = parser.parse_args(argv)

    wanted = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(wanted) - set(ORDER)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    previous: dict[str, Any] = json.loads(args.reuse.read_text()) if args.reuse else {}
    started = time.monotonic()
    results: dict[str, Any] = {"meta": machine()}
    cmds = commands(args)
    for name in ORDER:
        if name in wanted and name in cmds:
            limit = DEFAULT_TIMEOUTS[name] * args.timeout_scale
            if name == "chaos" and args.full:
                limit = max(limit, 900 * args.timeout_scale)
            results[name] = run_bench(name, cmds[name], limit)
        elif name in previous:
            results[name] = previous[name]
    if previous.get("meta") and not any(n in cmds for n in wanted):
        results["meta"] = previous["meta"]
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    if args.save:
        args.save.write_text(json.dumps(results, indent=2))
    written: list[str] = []
    if not args.no_report:
        written = [os.path.relpath(p, ROOT) for p in report.write_report(results)]
    summary = {
        "machine": results["meta"],
        "benchmarks": {n: results[n]["status"] for n in ORDER if n in results},
        "targets": [
            {
                "bench": t.bench,
                "what": t.name,
                "target": t.goal,
                "measured": t.value,
                "verdict": t.verdict,
            }
            for t in report.targets(results)
        ],
        "written": written,
    }
    print(json.dumps(summary, indent=2))
    failed = [n for n in ORDER if n in results and results[n]["result"] is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
