"""`leadlex-sync dev --salesforce cdc`: the Pub/Sub simulator and the CDC subscriber as two
more dev-mode children (self-contained, so cli/devmode.py only calls `start_cdc`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cli.devmode import DEV_SF_ORG, Children, venv_bin


def start_cdc(children: Children, env: dict[str, str], run_dir: Path) -> list[str]:
    """Start the simulator and `leadlex-sync salesforce subscribe`; lines to print."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / "salesforce-sandbox.json"
    ready.unlink(missing_ok=True)
    children.start(
        "salesforce-sandbox",
        [sys.executable, "-m", "salesforce_sandbox", "--org-id", DEV_SF_ORG,
         "--ready-file", str(ready)],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not ready.exists():
        raise RuntimeError("the Salesforce Pub/Sub simulator did not start")
    endpoints: dict[str, Any] = json.loads(ready.read_text())
    from salesforce_sandbox.server import SandboxConfig

    defaults = SandboxConfig()
    env.update(
        {
            "SALESFORCE_INSTANCE_URL": endpoints["instance_url"],
            "SALESFORCE_CLIENT_ID": defaults.client_id,
            "SALESFORCE_CLIENT_SECRET": defaults.client_secret,
            "SALESFORCE_PUBSUB_ENDPOINT": endpoints["pubsub_endpoint"],
            "SALESFORCE_PUBSUB_TLS": "false",
            # The simulator starts empty: reading it from the start loses no early sample.
            "SALESFORCE_CDC_INITIAL_REPLAY": "earliest",
        }
    )
    children.start("cdc", [venv_bin("leadlex-sync"), "salesforce", "subscribe"], env)
    url = endpoints["instance_url"]
    return [
        f"  Salesforce CDC      simulator {url} (Pub/Sub {endpoints['pubsub_endpoint']}),",
        "                      subscriber running; emit a Contact change event with:",
        f"  .venv/bin/leadlex-sync salesforce sample --instance-url {url}",
    ]
