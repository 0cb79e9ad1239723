"""`leadlex-sync dev` and `leadlex-sync sandbox`."""

from __future__ import annotations

import sys

import click

from cli.context import (
    main,
)


@main.command()
@click.option(
    "--port", type=int, default=None, help="Receiver port on 127.0.0.1 [default: PORT or 8000]."
)
@click.option("--flower/--no-flower", default=True, show_default=True, help="Start Flower.")
@click.option("--flower-port", type=int, default=None, help="[default: FLOWER_PORT or 5555]")
@click.option(
    "--hubspot",
    type=click.Choice(["journal", "webhooks", "both"]),
    default=None,
    help="Also run the HubSpot simulator, feeding the sync by journal, webhooks or both.",
)
@click.option(
    "--salesforce",
    type=click.Choice(["outbound", "cdc"]),
    default="outbound",
    show_default=True,
    help="cdc: also run the Salesforce Pub/Sub simulator and the CDC subscriber.",
)
def dev(
    port: int | None, flower: bool, flower_port: int | None, hubspot: str | None, salesforce: str
) -> None:
    """Run everything locally: Redis (embedded if none), simulator, receiver, worker, beat."""
    from cli.devmode import run_dev

    sys.exit(
        run_dev(
            port=port,
            flower=flower,
            flower_port=flower_port,
            hubspot=hubspot,
            salesforce=salesforce,
        )
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option("--api-key", default="sandbox-key", show_default=True, help="Key with read+write.")
@click.option(
    "--plan", type=click.Choice(["starter", "pro", "org"]), default="pro", show_default=True
)
@click.option("--seed-demo/--no-seed-demo", default=True, show_default=True)
def sandbox(host: str, port: int, api_key: str, plan: str, seed_demo: bool) -> None:
    """Run the local LeadLex simulator (a faithful LeadLex API for dev and tests)."""
    from leadlex_sandbox.__main__ import main as sandbox_main

    argv = ["--host", host, "--port", str(port), "--api-key", api_key, "--plan", plan]
    if seed_demo:
        argv.append("--seed-demo")
    sys.exit(sandbox_main(argv))
