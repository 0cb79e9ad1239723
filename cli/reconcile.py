"""`leadlex-sync reconcile [--repair] [--csv FILE]`: does LeadLex hold what the CRM says?"""

from __future__ import annotations

import csv
from pathlib import Path

import click

from cli.context import main, runtime, settings_or_exit

REASON_TEXT = {
    "parked": "parked: the record has events waiting (no link yet, or before its deletion)",
    "dead_letter": "waiting in the dead-letter store (leadlex-sync dlq list)",
    "pending": "staged, waiting for its flush (coalescing or budget)",
    "edited_in_leadlex": "edited in LeadLex after our write",
    "never_arrived": "the change never arrived in LeadLex",
}


@main.command("reconcile")
@click.option("--repair", is_flag=True, help="Stage the CRM values of drifted fields again.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every drifted field to this CSV.",
)
@click.option(
    "--allow-list",
    is_flag=True,
    help="If the export is refused, use the paged list without asking (its cost is printed).",
)
def reconcile_cmd(repair: bool, csv_path: Path | None, allow_list: bool) -> None:
    """Export LeadLex (or, if refused, list it) and compare every linked contact with the
    newest CRM values."""
    from cli.onboarding import fetch_directory
    from worker.onboarding import reconcile

    rt = runtime(settings_or_exit(require_leadlex=True))
    contacts, calls, via = fetch_directory(rt, allow_list=allow_list)
    report = reconcile.run(rt, contacts, calls=calls, via=via)
    click.echo(
        f"compared {report.compared} linked records ({calls} LeadLex call(s), via {via}); "
        f"{report.without_values} linked records have no CRM values yet; "
        f"{len(report.missing)} linked contacts are missing in LeadLex"
    )
    click.echo(f"{len(report.drifts)} fields differ on {report.contacts()} contacts")
    for reason, n in report.by_reason().items():
        if n:
            click.echo(f"  {n:>6}  {REASON_TEXT[reason]}")
    for d in report.drifts[:20]:
        click.echo(
            f"  {d.contact} {d.field}: LeadLex {d.leadlex_value!r}, CRM {d.crm_value!r} "
            f"({d.reason})"
        )
    if len(report.drifts) > 20:
        click.echo(f"  ... {len(report.drifts) - 20} more (use --csv FILE)")
    if csv_path is not None:
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["contact", "source", "account", "object_id", "field", "leadlex", "crm", "reason"]
            )
            for d in report.drifts:
                writer.writerow(
                    [
                        d.contact,
                        d.source,
                        d.account,
                        d.object_id,
                        d.field,
                        d.leadlex_value,
                        d.crm_value,
                        d.reason,
                    ]
                )
        click.echo(f"drift report: {csv_path}")
    if repair:
        staged = reconcile.repair(rt, report)
        click.echo(
            f"repair: {staged} fields staged through the normal path "
            "(parked, dead-lettered and pending fields are left to their own paths)"
        )
