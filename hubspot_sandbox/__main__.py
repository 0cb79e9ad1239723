"""`python -m hubspot_sandbox`: run the HubSpot simulator standalone (dev mode uses this)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence

from hubspot_sandbox.config import HubSpotSandboxConfig
from hubspot_sandbox.server import HubSpotSandboxServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hubspot_sandbox")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8788)
    parser.add_argument("--client-id", default="sandbox-client-id")
    parser.add_argument("--client-secret", default="sandbox-client-secret")
    parser.add_argument("--webhook-url", default=None, help="push changes here as webhooks")
    args = parser.parse_args(argv)
    config = HubSpotSandboxConfig(
        client_id=args.client_id, client_secret=args.client_secret, webhook_url=args.webhook_url
    )
    server = HubSpotSandboxServer(config, args.host, args.port, push_interval=1.0).start()
    print(f"HubSpot simulator: HUBSPOT_API_BASE_URL={server.url}", file=sys.stderr, flush=True)
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        time.sleep(0.3)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
