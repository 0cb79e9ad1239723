"""`leadlex-sync backfill CRM_EXPORT.csv --source hubspot|salesforce`: send the CRM's current
values of linked records that differ from LeadLex, after live changes, within a budget share.

LeadLex is read as `links match` reads it (`cli.onboarding.fetch_directory`: the export, by
created_at windows beyond 50,000 contacts; the paged list, after its cost, when refused).

The plan (records that differ, fields, calls, days at this plan) is printed before anything
is queued; the queue lives in Redis and the workers' pump releases it
(`worker/onboarding/backfill.py`), so closing this command, or killing it, stops nothing and
loses nothing: run it again to see progress (`--wait`) or to queue a newer export (records
already queued are not queued twice).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.context import fail, main, runtime, settings_or_exit
from cli.links import _org_18
from cli.onboarding import _column_overrides

NOTES_PROPERTY = {"hubspot": "leadlex_notes", "salesforce": "Description"}


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


@main.command("backfill")
@click.argument(
    "export", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.option("--source", type=click.Choice(["hubspot", "salesforce"]))
@click.option("--account", default="", help="Portal id / org id of the export (empty: any).")
@click.option("--column", "columns", multiple=True, metavar="ROLE=HEADER", help="Rename a column.")
@click.option(
    "--budget-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Share of the daily LeadLex budget backfill may use (default BACKFILL_BUDGET_SHARE).",
)
@click.option("--notes", is_flag=True, help="Also append the export's notes column (appends!).")
@click.option(
    "--as-of",
    default=None,
    help="When the export was taken (ISO 8601; default: the file's modification time). "
    "Live changes after it always win.",
)
@click.option("--yes", is_flag=True, help="Queue without asking.")
@click.option(
    "--allow-list",
    is_flag=True,
    help="If LeadLex's export is refused, use the paged list without asking (cost printed).",
)
@click.option("--wait", "wait", is_flag=True, help="Show progress with ETA until done.")
def backfill_cmd(
    export: Path | None,
    source: str | None,
    account: str,
    columns: tuple[str, ...],
    budget_share: float | None,
    notes: bool,
    as_of: str | None,
    yes: bool,
    allow_list: bool,
    wait: bool,
) -> None:
    """Plan and queue a backfill from a CRM export (without EXPORT: show progress)."""
    from cli.onboarding import fetch_directory
    from worker.onboarding import backfill
    from worker.onboarding.backfill_plan import days_needed, per_day, plan_backfill
    from worker.onboarding.crm_export import ExportFormatError, InvalidRow, read_export

    settings = settings_or_exit(require_leadlex=True)
    share = budget_share or settings.backfill_budget_share
    rt = runtime(settings)
    if export is None:
        _progress(rt, wait)
        return
    if source is None:
        fail("--source is required with an export file")
        return
    if source == "salesforce" and account:
        account = _org_18(account, "--account")
    if notes and not any(c.startswith("notes=") for c in columns):
        fail("--notes needs the notes column: --column notes=HEADER")
    try:
        moment = (
            datetime.fromisoformat(as_of)
            if as_of
            else datetime.fromtimestamp(export.stat().st_mtime, UTC)
        )
    except ValueError:
        fail(f"--as-of {as_of!r}: not an ISO 8601 time")
        return
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    as_of_ms = int(moment.timestamp() * 1000)
    try:
        with export.open(newline="", encoding="utf-8-sig") as fh:
            items = list(read_export(fh, source, _column_overrides(columns)))
    except (ExportFormatError, ValueError) as err:
        fail(f"{export}: {err}")
        return
    rows = [i for i in items if not isinstance(i, InvalidRow)]
    links = {
        object_id: contact
        for src, acct, object_id, contact in rt.state.iter_links()
        if src == source and (not acct or not account or acct == account)
    }
    directory, calls, via = fetch_directory(rt, allow_list=allow_list)
    contacts = {c.id: c for c in directory}
    click.echo(f"LeadLex contacts: {len(contacts)} via {via}, {calls} LeadLex call(s)")
    plan = plan_backfill(
        rows,
        source=source,
        cfg=rt.mapping,
        links=links,
        leadlex=contacts,
        region=settings.default_phone_region,
        notes_property=NOTES_PROPERTY[source] if notes else None,
    )
    daily = per_day(share, settings.daily_limit)
    click.echo(
        f"plan: {len(rows)} rows; {plan.equal} linked records already equal (cost nothing), "
        f"{plan.unlinked} without a link (run `links match` first), "
        f"{plan.missing} linked to contacts missing in LeadLex"
    )
    click.echo(
        f"plan: {plan.calls} contacts differ ({plan.fields()} fields): {plan.calls} LeadLex "
        f"calls; at {share:g} of {settings.daily_limit} calls a day = {daily} a day: "
        f"{days_needed(plan.calls, daily)} day(s)"
        + ("" if notes else "; notes are not backfilled (--notes)")
    )
    if not plan.items:
        click.echo("nothing to backfill")
        return
    if not yes and not click.confirm("queue the backfill?", default=False):
        fail("nothing queued", 1)
    events = [backfill.backfill_event(source, account, item, as_of_ms) for item in plan.items]
    added = backfill.enqueue(
        rt.redis,
        events,
        share=share,
        seconds_per_record=60.0 / max(1, settings.rate_per_minute),
    )
    click.echo(
        f"queued {added} records ({len(events) - added} were queued before); the workers' "
        "pump releases them after live changes"
    )
    _progress(rt, wait)


def _progress(rt: object, wait: bool) -> None:
    from worker.onboarding import backfill

    st = backfill.status(rt)  # type: ignore[arg-type]
    click.echo(
        f"backfill: {st.released}/{st.total} released, {st.remaining} queued, "
        f"{st.released_today}/{st.per_day} today; ETA {_when(st.finish_at)}"
    )
    if not wait or st.remaining == 0:
        return
    with click.progressbar(
        length=st.total, label="backfill", file=sys.stderr, show_eta=False
    ) as bar:
        bar.update(st.released)
        done = st.released
        try:
            while st.remaining:
                time.sleep(5)
                st = backfill.status(rt)  # type: ignore[arg-type]
                bar.label = f"backfill (ETA {_when(st.finish_at)})"
                bar.update(st.released - done)
                done = st.released
        except KeyboardInterrupt:
            click.echo("\nstopped watching; the backfill continues in the workers", err=True)
