"""`leadlex-sync dlq list|show|replay|drop|purge`."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime

import click

from cli.context import (
    fail,
    main,
    open_redis,
    runtime,
    settings_or_exit,
)

_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def _check_id(entry_id: str) -> None:
    """A dead letter id is a Redis stream id (`1732612345678-0`, see `dlq list`)."""
    if not _ENTRY_ID.match(entry_id):
        fail(f"no dead letter {entry_id!r}: ids look like 1732612345678-0 (see `dlq list`)")


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, drop, purge."""


@dlq.command("list")
@click.option("--reason", default=None, help="Only this reason code.")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(reason: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    from worker.deadletter import DeadLetters

    letters = list(DeadLetters(open_redis(settings_or_exit())).iter(reason))
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in letters], indent=2, default=str))
        return
    for d in letters:
        when = datetime.fromtimestamp(d.created_at, UTC).isoformat(timespec="seconds")
        click.echo(f"{d.id}  {when}  {d.reason:<20} {d.source:<10} {d.contact}  {d.last_error}")
    click.echo(f"{len(letters)} dead letters", err=True)


@dlq.command("show")
@click.argument("entry_id")
def dlq_show(entry_id: str) -> None:
    """Show one dead letter in full (JSON)."""
    from worker.deadletter import DeadLetters

    _check_id(entry_id)
    letter = DeadLetters(open_redis(settings_or_exit())).get(entry_id)
    if letter is None:
        fail(f"no dead letter {entry_id}")
    assert letter is not None
    click.echo(json.dumps(letter.to_dict(), indent=2, default=str))


@dlq.command("replay")
@click.argument("entry_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter.")
@click.option("--reason", default=None, help="Replay every dead letter with this reason.")
def dlq_replay(entry_id: str | None, all_: bool, reason: str | None) -> None:
    """Send dead letters through the normal pipeline again (dedupe, ordering, budget)."""
    from worker.deadletter import DeadLetters
    from worker.replay import replay_letters

    if sum(bool(x) for x in (entry_id, all_, reason)) != 1:
        fail("give exactly one of ID, --all or --reason R")
    if entry_id:
        _check_id(entry_id)
    rt = runtime(settings_or_exit())
    store = DeadLetters(rt.redis)
    if entry_id:
        one = store.get(entry_id)
        if one is None:
            fail(f"no dead letter {entry_id}")
        letters = [one]
    else:
        letters = list(store.iter(reason))
    with click.progressbar(letters, label="replay", file=sys.stderr, show_pos=True) as bar:
        done, skipped = replay_letters(rt, [d for d in bar if d is not None])
    click.echo(f"replayed {done}; {skipped} cannot be replayed (kept)")


@dlq.command("drop")
@click.argument("entry_ids", nargs=-1, required=True)
def dlq_drop(entry_ids: tuple[str, ...]) -> None:
    """Delete dead letters by id, e.g. a `notes_uncertain` note you found in LeadLex."""
    from worker.deadletter import DeadLetters

    store = DeadLetters(open_redis(settings_or_exit()))
    missing = [i for i in entry_ids if store.get(i) is None]
    if missing:
        fail(f"no dead letter {', '.join(missing)}")
    removed = store.delete(*entry_ids)
    click.echo(f"dropped {removed} dead letters")


_DURATION = re.compile(r"^(\d+)([smhd])$")


@dlq.command("purge")
@click.option("--older-than", "older_than", required=True, help="Age such as 30d, 12h, 90m.")
def dlq_purge(older_than: str) -> None:
    """Delete dead letters older than the given age."""
    from worker.deadletter import DeadLetters

    m = _DURATION.match(older_than.strip())
    if not m:
        fail(f"--older-than {older_than!r}: use a number and s, m, h or d (e.g. 30d)")
    assert m is not None
    seconds = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    removed = DeadLetters(open_redis(settings_or_exit())).purge_older_than(seconds)
    click.echo(f"purged {removed} dead letters older than {older_than}")
