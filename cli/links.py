"""`leadlex-sync links import|export|show`."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from cli.context import (
    LINK_HEADER,
    SOURCES,
    fail,
    main,
    open_redis,
    runtime,
    settings_or_exit,
)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@main.group()
def links() -> None:
    """Which LeadLex contact each CRM record is."""


def _org_18(account: str, where: str) -> str:
    """A Salesforce org id in the one stored form (18 characters, checksum verified)."""
    from worker.salesforce_ids import SalesforceIdError, to_18

    try:
        return to_18(account)
    except SalesforceIdError as exc:
        fail(f"{where}: account {account!r} is not a Salesforce org id: {exc}")
        raise  # fail() exits; this keeps type checkers sure


def _read_links(path: Path) -> Iterator[tuple[str, str, str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != LINK_HEADER:
            fail(f"{path}: header must be exactly {','.join(LINK_HEADER)}")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 4:
                fail(f"{path}:{lineno}: expected 4 columns, got {len(row)}")
            source, account, object_id, leadlex_id = (c.strip() for c in row)
            if source not in SOURCES:
                fail(f"{path}:{lineno}: source {source!r} is not one of {', '.join(SOURCES)}")
            if not object_id or ":" in object_id:
                fail(f"{path}:{lineno}: object_id is empty or contains ':'")
            if ":" in account:
                fail(f"{path}:{lineno}: account contains ':'")
            if source == "salesforce" and account:
                account = _org_18(account, f"{path}:{lineno}")
            if not _ID_RE.match(leadlex_id):
                fail(f"{path}:{lineno}: leadlex_id {leadlex_id!r} is not a LeadLex id")
            yield source, account, object_id, leadlex_id


@links.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def links_import(file: Path) -> None:
    """Load links from a CSV (header source,account,object_id,leadlex_id; empty account = any)."""
    from worker import pipeline

    rows = list(_read_links(file))  # validate everything before writing anything
    rt = runtime(settings_or_exit())
    replayed = 0
    with click.progressbar(length=len(rows), label="links", file=sys.stderr, show_pos=True) as bar:
        for i in range(0, len(rows), 5000):
            chunk = rows[i : i + 5000]
            replayed += pipeline.link_records(rt, chunk)
            bar.update(len(chunk))
    click.echo(f"imported {len(rows)} links; {replayed} parked events replayed")


@links.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
def links_export(file: Path | None) -> None:
    """Write all links as CSV (to FILE or standard output)."""
    from worker.state import State

    state = State(open_redis(settings_or_exit()))
    out = file.open("w", newline="", encoding="utf-8") if file else sys.stdout
    try:
        writer = csv.writer(out)
        writer.writerow(LINK_HEADER)
        for row in state.iter_links():
            writer.writerow(row)
    finally:
        if file:
            out.close()


@links.command("show")
@click.argument("source", type=click.Choice(SOURCES))
@click.argument("object_id")
@click.option("--account", default="", help="CRM account (portal / org id).")
def links_show(source: str, object_id: str, account: str) -> None:
    """Show the LeadLex id a CRM record resolves to."""
    from worker.state import State

    if source == "salesforce" and account:
        account = _org_18(account, "--account")
    contact = State(open_redis(settings_or_exit())).resolve_link(source, account, object_id)
    if contact is None:
        fail(f"no link for {source} record {object_id}")
    click.echo(contact)
