"""`python -m leadlex_sandbox`: run the LeadLex simulator standalone."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from leadlex_sandbox.config import DEFAULT_API_KEY, PLANS, READ_WRITE, SandboxConfig
from leadlex_sandbox.server import serve


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: --host --port --api-key --plan --seed-demo."""
    parser = argparse.ArgumentParser(
        prog="python -m leadlex_sandbox", description="A local LeadLex API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument(
        "--api-key", default=DEFAULT_API_KEY, help="the accepted key (read + write)"
    )
    parser.add_argument("--plan", choices=sorted(PLANS), default="starter")
    parser.add_argument("--seed-demo", action="store_true", help="start with demo contacts")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C."""
    args = parse_args(argv)
    config = SandboxConfig(api_keys={args.api_key: READ_WRITE}, plan=args.plan)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # honcho/compose stop cleanly
    serve(args.host, args.port, config, seed_demo=args.seed_demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
