"""`python -m salesforce_sandbox`: run the Salesforce Pub/Sub simulator standalone."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from salesforce_sandbox.server import SalesforceSandbox, SandboxConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="python -m salesforce_sandbox",
        description="A local Salesforce org: OAuth token endpoint + Pub/Sub API (CDC).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--http-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--org-id", default=defaults.org_id)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument("--username", default=defaults.username)
    parser.add_argument("--jwt-public-key", type=Path, help="PEM file; enables JWT bearer")
    parser.add_argument("--keepalive-seconds", type=float, default=defaults.keepalive_seconds)
    parser.add_argument("--ready-file", type=Path, help="write the endpoints here as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = SandboxConfig(
        org_id=args.org_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        username=args.username,
        jwt_public_key=args.jwt_public_key.read_text() if args.jwt_public_key else None,
        keepalive_seconds=args.keepalive_seconds,
    )
    sandbox = SalesforceSandbox(config, host=args.host).start(args.grpc_port, args.http_port)
    endpoints = {
        "instance_url": sandbox.instance_url,
        "pubsub_endpoint": sandbox.pubsub_endpoint,
        "org_id": config.org_id,
    }
    if args.ready_file:
        args.ready_file.write_text(json.dumps(endpoints))
    print(json.dumps(endpoints), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
