"""`leadlex-sync dev --hubspot journal|webhooks|both`: the local HubSpot simulator in dev mode.

Called by `cli.devmode.run_dev` before it starts the receiver and workers: starts
`python -m hubspot_sandbox` on 127.0.0.1 (HUBSPOT_SANDBOX_PORT, default 8788) signing
with the dev HubSpot secret, points the workers' journal settings at it (`journal`,
`both`), creates the journal subscriptions, and makes it push webhooks to the receiver
(`webhooks`, `both`). Returns the lines dev mode prints, or None when it failed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx

DEV_HUBSPOT_CLIENT_ID = "dev-hubspot-client-id"
MODES = ("journal", "webhooks", "both")


def start_hubspot_dev(
    mode: str | None, env: dict[str, str], children: Any, port: int
) -> list[str] | None:
    """Start the simulator for `mode` and adjust `env` for the children that follow."""
    if mode is None:
        return []
    from cli.devmode import _wait_http

    sim_port = int(os.environ.get("HUBSPOT_SANDBOX_PORT", "8788"))
    root = f"http://127.0.0.1:{sim_port}"
    argv = [
        sys.executable, "-m", "hubspot_sandbox", "--port", str(sim_port),
        "--client-id", DEV_HUBSPOT_CLIENT_ID, "--client-secret", env["HUBSPOT_CLIENT_SECRET"],
    ]  # fmt: skip
    if mode in ("webhooks", "both"):
        argv += ["--webhook-url", f"http://127.0.0.1:{port}/webhooks/hubspot"]
    children.start("hubspot", argv, env)
    if not _wait_http(f"{root}/_hubspot/stats"):
        print("leadlex-sync: the HubSpot simulator did not start", file=sys.stderr)
        return None
    if mode in ("journal", "both"):
        env.update(
            {
                "HUBSPOT_JOURNAL": "on",
                "HUBSPOT_CLIENT_ID": DEV_HUBSPOT_CLIENT_ID,
                "HUBSPOT_API_BASE_URL": root,
                "HUBSPOT_JOURNAL_POLL_SECONDS": env.get("HUBSPOT_JOURNAL_POLL_SECONDS", "2"),
                "HUBSPOT_JOURNAL_START": "earliest",
            }
        )
        _subscribe(root, env)
    change = '{"changes": [{"objectId": 101, "properties": {"jobtitle": "CFO"}}]}'
    return [
        f"  HubSpot simulator   {root}  (mode: {mode})",
        "  Make a HubSpot change (it reaches LeadLex by "
        + {"journal": "the journal", "webhooks": "webhook", "both": "webhook and journal"}[mode]
        + "):",
        f"    curl -s -X POST {root}/_hubspot/changes -H 'Content-Type: application/json' "
        f"-d '{change}'",
    ]


def _subscribe(root: str, env: dict[str, str]) -> None:
    from pull_sources.hubspot_journal.api import JournalClient
    from pull_sources.hubspot_journal.subscriptions import apply_subscriptions
    from worker.mapping import load_mapping
    from worker.settings import load_settings

    settings = load_settings(env, require_leadlex=False, env_file=None)
    mapping = load_mapping(settings.mapping_file, settings.default_phone_region)
    with httpx.Client(timeout=10) as http:
        client = JournalClient(http, root, DEV_HUBSPOT_CLIENT_ID, env["HUBSPOT_CLIENT_SECRET"])
        apply_subscriptions(client, mapping, None)
