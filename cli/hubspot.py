"""`leadlex-sync hubspot project DIR` and `leadlex-sync hubspot subscribe`."""

from __future__ import annotations

from pathlib import Path

import click

from cli.context import fail, main, settings_or_exit


@main.group()
def hubspot() -> None:
    """Connect HubSpot: the developer-platform project and the Webhooks Journal."""


@hubspot.command("project")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(["webhooks", "journal", "both"]),
    default="both",
    show_default=True,
    help="journal: no webhooks component (the receiver needs no public URL).",
)
@click.option(
    "--auth",
    type=click.Choice(["static", "oauth"]),
    default="static",
    show_default=True,
    help="static: one account (private); oauth: several accounts (needs --redirect-url).",
)
@click.option("--name", default="leadlex-sync", show_default=True, help="Project and app name.")
@click.option("--redirect-url", default=None, help="OAuth redirect URL (with --auth oauth).")
@click.option("--max-concurrent-requests", default=10, show_default=True, type=int, help="Above 5.")
def project(
    directory: Path,
    mode: str,
    auth: str,
    name: str,
    redirect_url: str | None,
    max_concurrent_requests: int,
) -> None:
    """Write (or update) a HubSpot project in DIRECTORY from the active mapping.

    Then: `cd DIRECTORY && hs project upload` (and `hs project deploy` if auto-deploy is off).
    """
    from cli.hubspot_project import (
        WEBHOOKS_FILE,
        ProjectError,
        ProjectOptions,
        project_files,
        subscription_diff,
    )
    from worker.mapping import MappingError, load_mapping

    settings = settings_or_exit()
    try:
        mapping = load_mapping(settings.mapping_file, settings.default_phone_region)
    except MappingError as err:
        fail(f"MAPPING_FILE: {err}", 2)
        raise  # unreachable
    options = ProjectOptions(
        name=name,
        mode=mode,  # type: ignore[arg-type]
        auth=auth,  # type: ignore[arg-type]
        public_base_url=settings.public_base_url,
        redirect_url=redirect_url,
        max_concurrent_requests=max_concurrent_requests,
    )
    try:
        files = project_files(mapping, options)
    except ProjectError as err:
        fail(str(err), 2)
        raise  # unreachable
    old_webhooks = directory / WEBHOOKS_FILE
    old_text = old_webhooks.read_text() if old_webhooks.is_file() else None
    for rel, text in files.items():
        path = directory / rel
        if not text:
            if path.exists():
                path.unlink()
                click.echo(f"removed {path}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = not path.is_file() or path.read_text() != text
        if changed:
            path.write_text(text)
        click.echo(f"{'wrote    ' if changed else 'unchanged'} {path}")
    if files.get(WEBHOOKS_FILE):
        added, removed = subscription_diff(old_text, files[WEBHOOKS_FILE])
        if old_text is not None and (added or removed):
            click.echo(
                "property subscriptions: "
                + ", ".join([f"+{p}" for p in added] + [f"-{p}" for p in removed])
            )
    click.echo(f"next: cd {directory} && hs project upload   (then hs project deploy)")


@hubspot.command("subscribe")
@click.option("--dry-run", is_flag=True, help="Print the subscriptions; change nothing.")
def subscribe(dry_run: bool) -> None:
    """Create or update the Webhooks Journal subscriptions the active mapping needs.

    Needs HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET (HUBSPOT_API_BASE_URL for a
    simulator). Run it again after changing the mapping.
    """
    import json

    import httpx

    from pull_sources.hubspot_journal.api import JournalClient, JournalError, JournalRetryable
    from pull_sources.hubspot_journal.subscriptions import wanted_subscriptions
    from worker.mapping import MappingError, load_mapping

    settings = settings_or_exit()
    try:
        mapping = load_mapping(settings.mapping_file, settings.default_phone_region)
    except MappingError as err:
        fail(f"MAPPING_FILE: {err}", 2)
        raise  # unreachable
    portals = settings.hubspot_portal_ids
    wanted = wanted_subscriptions(mapping, portals[0] if len(portals) == 1 else None)
    if dry_run:
        click.echo(json.dumps(wanted, indent=2))
        return
    if not settings.hubspot_client_id or settings.hubspot_client_secret is None:
        fail("HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET: both required to subscribe", 2)
        raise AssertionError  # unreachable
    with httpx.Client(timeout=settings.hubspot_journal_timeout_seconds) as http:
        client = JournalClient(
            http,
            settings.hubspot_api_base_url,
            settings.hubspot_client_id,
            settings.hubspot_client_secret.get_secret_value(),
        )
        try:
            for body in wanted:
                answer = client.upsert_subscription(body)
                props = ",".join(answer.get("properties") or []) or "-"
                click.echo(
                    f"subscription {answer.get('id')}: {answer.get('subscriptionType')} "
                    f"{answer.get('objectTypeId')} {','.join(answer.get('actions') or [])} "
                    f"properties={props}"
                )
        except (JournalError, JournalRetryable) as err:
            fail(f"HubSpot: {err}", 1)
