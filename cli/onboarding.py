"""`leadlex-sync links match CRM_EXPORT.csv --source hubspot|salesforce [--apply]`.

Reads a CRM export, fetches LeadLex's contacts with one export call (a few, by created_at
windows, beyond 50,000 contacts; or, when the export is refused, the paged list after
showing its cost: `fetch_directory`, shared with `backfill` and `reconcile`), matches
(worker/onboarding/matching.py) and prints a table. Dry run by default; writes
`<export>.ambiguous.csv`, `<export>.unmatched.csv` and `<export>.links.csv` (the matched
rows in `links import` form, to review). `--apply` stores the matched links through
`worker.pipeline.link_records`, which replays the records' parked events.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from cli.context import LINK_HEADER, fail, runtime, settings_or_exit
from cli.links import _org_18, links


def _column_overrides(values: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        role, eq, header = value.partition("=")
        if not eq or not role.strip() or not header.strip():
            fail(f"--column {value!r}: expected ROLE=HEADER, e.g. email=E-mail Address")
        out[role.strip()] = header.strip()
    return out


def _counted(lines: Iterable[str], bar: Any) -> Iterable[str]:
    """`lines`, advancing the progress bar by each line's size."""
    for line in lines:
        bar.update(len(line.encode("utf-8")))
        yield line


def _write_csv(path: Path, header: list[str], rows: Iterable[list[str]]) -> int:
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def fetch_directory(rt: Any, *, allow_list: bool) -> tuple[list[Any], int, str]:
    """LeadLex's whole directory for an onboarding command: (contacts, calls, "export" or
    "list"). The export first (one call below 50,000 contacts, a few more by created_at
    windows above); when it is refused, the paged list, after showing its cost and asking
    (unless `allow_list`). Fails the command with one clear line when neither can be had."""
    from worker.leadlex import LeadLexError
    from worker.onboarding import directory

    settings = rt.settings
    try:
        exported = directory.export_contacts(rt)
    except directory.ExportRefused as refused:
        calls = refused.calls
        click.echo(f"LeadLex {refused.reason}", err=True)
        walk = directory.ListWalk(rt)
        try:
            pages = walk.first()
        except (LeadLexError, directory.BudgetExhaustedError) as err:
            fail(f"the paged list failed too: {err}")
            raise
        calls += 1
        click.echo(
            f"the paged list costs {pages} LeadLex calls for {walk.total} contacts "
            f"(1 spent, {pages - 1} to go) out of {settings.daily_limit} a day"
        )
        if pages > 1 and not allow_list and not click.confirm("fetch the list?", default=False):
            fail("stopped before the paged list; try the export again later", 1)
        with click.progressbar(length=pages, label="list pages", file=sys.stderr) as bar:
            bar.update(1)
            try:
                for _page in walk.rest():
                    calls += 1
                    bar.update(1)
            except (LeadLexError, directory.BudgetExhaustedError) as err:
                fail(f"paged list stopped: {err}")
        return walk.contacts, calls, "list"
    except (LeadLexError, directory.BudgetExhaustedError) as err:
        fail(str(err))
        raise
    if exported.calls > 1:
        click.echo(
            f"LeadLex has more contacts than one export returns: read by created_at windows "
            f"in {exported.calls} export calls"
        )
    return list(exported), exported.calls, "export"


@links.command("match")
@click.argument("export", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--source", type=click.Choice(["hubspot", "salesforce"]), required=True)
@click.option("--account", default="", help="Portal id / org id the links are for (empty: any).")
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="ROLE=HEADER",
    help="Rename a column (roles: object_id, first_name, last_name, email, phone, mobile, "
    "company, job_title).",
)
@click.option("--name-company", is_flag=True, help="Also match by name + company (opt-in).")
@click.option("--apply", "apply_links", is_flag=True, help="Store the matched links.")
@click.option(
    "--allow-list",
    is_flag=True,
    help="If the export is refused, use the paged list without asking (its cost is printed).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the CSV reports go (default: beside the export).",
)
def links_match(
    export: Path,
    source: str,
    account: str,
    columns: tuple[str, ...],
    name_company: bool,
    apply_links: bool,
    allow_list: bool,
    report_dir: Path | None,
) -> None:
    """Link CRM records to LeadLex contacts by email, phone (and name + company)."""
    from worker import pipeline
    from worker.onboarding.crm_export import ExportFormatError, InvalidRow, read_export
    from worker.onboarding.matching import (
        AMBIGUOUS,
        MATCHED,
        UNMATCHED,
        ContactIndex,
        match_rows,
    )

    if source == "salesforce" and account:
        account = _org_18(account, "--account")
    overrides = _column_overrides(columns)
    rows = []
    invalid: list[InvalidRow] = []
    try:
        with export.open(newline="", encoding="utf-8-sig") as fh:
            total_bytes = max(1, export.stat().st_size)
            with click.progressbar(
                length=total_bytes, label="reading export", file=sys.stderr
            ) as bar:
                for item in read_export(_counted(fh, bar), source, overrides):
                    if isinstance(item, InvalidRow):
                        invalid.append(item)
                    else:
                        rows.append(item)
                bar.update(0)
    except ExportFormatError as err:
        fail(f"{export}: {err}")
    except ValueError as err:
        fail(str(err))
    except UnicodeDecodeError:
        fail(f"{export}: not UTF-8 text (save the export as CSV UTF-8)")

    settings = settings_or_exit(require_leadlex=True)
    rt = runtime(settings)
    click.echo(f"{len(rows)} CRM rows read ({len(invalid)} invalid); fetching LeadLex contacts")
    contacts, calls, via = fetch_directory(rt, allow_list=allow_list)

    linked: dict[str, str] = {}
    linked_to: dict[str, set[str]] = {}
    for src, acct, object_id, leadlex_id in rt.state.iter_links():
        if src != source or (acct and account and acct != account):
            continue
        linked[object_id] = leadlex_id
        linked_to.setdefault(leadlex_id, set()).add(object_id)
    index = ContactIndex(contacts, settings.default_phone_region)
    report = match_rows(
        rows, index, linked=linked, linked_to=linked_to, use_name_company=name_company
    )

    counts = report.counts()
    click.echo(f"LeadLex contacts: {len(contacts)} via {via}, {calls} LeadLex call(s)")
    click.echo(f"{'status':<16}{'rows':>8}")
    for status, n in counts.items():
        click.echo(f"{status:<16}{n:>8}")
    click.echo(f"{'invalid':<16}{len(invalid):>8}")
    rules = report.rules()
    if rules:
        click.echo("matched by: " + ", ".join(f"{k} {v}" for k, v in sorted(rules.items())))

    where = report_dir or export.parent
    where.mkdir(parents=True, exist_ok=True)
    stem = export.stem
    detail = ["line", "object_id", "email", "phone", "name", "company", "reason", "candidates"]

    def lines(status: str) -> Iterable[list[str]]:
        for m in report.by_status(status):
            r = m.row
            yield [
                str(r.line),
                r.object_id,
                r.get("email"),
                r.get("phone") or r.get("mobile"),
                r.full_name,
                r.get("company"),
                m.reason,
                " ".join(m.candidates),
            ]

    ambiguous_csv = where / f"{stem}.ambiguous.csv"
    unmatched_csv = where / f"{stem}.unmatched.csv"
    links_csv = where / f"{stem}.links.csv"
    _write_csv(ambiguous_csv, detail, lines(AMBIGUOUS))
    unmatched_rows = list(lines(UNMATCHED)) + [
        [str(i.line), "", "", "", "", "", f"invalid: {i.reason}", ""] for i in invalid
    ]
    _write_csv(unmatched_csv, detail, unmatched_rows)
    matched = [(source, account, m.row.object_id, m.leadlex_id) for m in report.by_status(MATCHED)]
    _write_csv(links_csv, LINK_HEADER, ([*row] for row in matched))
    click.echo(f"reports: {ambiguous_csv}, {unmatched_csv}, {links_csv}")
    if not apply_links:
        click.echo("dry run: nothing linked (add --apply to store the matched links)")
        return
    replayed = 0
    with click.progressbar(length=len(matched), label="linking", file=sys.stderr) as bar:
        for i in range(0, len(matched), 1000):
            chunk = matched[i : i + 1000]
            replayed += pipeline.link_records(rt, chunk)
            bar.update(len(chunk))
    click.echo(f"linked {len(matched)} records; {replayed} parked events replayed")
