"""LeadLex's contacts for onboarding (I/O): the export (by time windows), or the paged list.

Every call goes through the workers' Runtime: it takes the shared budget first (waiting for
a per-minute slot, never for the next day) and is counted like any LeadLex call.

- `export_contacts`: `GET /v1/contacts/export?limit=50000`: one call for fewer than 50,000
  contacts. A call that comes back full (exactly `limit` rows) is split by `created_at` into
  two overlapping windows (`created_after` / `created_before`), at the median `created_at`
  of the rows it returned (at the window's middle when that median sits on an edge), and so
  on until every window came back with fewer than `limit` rows; rows are deduplicated by id.
  Row order and whether the bounds include themselves are undocumented, so neither is relied
  on: the two halves overlap by `OVERLAP` around the split point (a contact created there is
  in both, whichever way the bounds go), and a window that returned fewer rows than `limit`
  returned all of its contacts. At most `max_calls` exports (default 10: the export's own
  hourly limit); more raises `ExportIncomplete` saying how many contacts were read. The
  answer (`ExportedContacts`) is a list that also says how many `calls` it took.
  The export has its own limit (10 an hour per workspace) and LeadLex's 429 does not say
  which limit refused, so an export 429 is *not* taken as a pause of every worker (the
  headers are still observed); it raises `ExportRefused` and the caller offers the paged list.
- `ListWalk`: `GET /v1/contacts?per_page=100`, page by page; its first page says the total,
  so the caller can show the cost (`pages`) before spending the rest.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.leadlex import LeadLexError, LeadLexResponse, RateLimitedError
from worker.onboarding.matching import LeadLexContact
from worker.pipeline.runtime import Runtime, observe_error

EXPORT_LIMIT = 50_000
MAX_EXPORT_CALLS = 10  # the export's own limit is 10 calls an hour per workspace
OVERLAP = timedelta(milliseconds=1)  # windows overlap by this much around each split point
PER_PAGE = 100
MAX_SLOT_WAIT_SECONDS = 120.0


class BudgetExhaustedError(RuntimeError):
    """No LeadLex call may be made today (or the workers are paused for longer)."""


class ExportRefused(RuntimeError):
    """The export was refused or failed; `reason` says how, `calls` how many export calls
    were made (the refused one included), `read` how many contacts they had read."""

    def __init__(self, reason: str, *, calls: int = 1, read: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.calls = calls
        self.read = read


class ExportIncomplete(ExportRefused):
    """The directory cannot be read within `max_calls` exports (or split by time)."""


class ExportedContacts(list[LeadLexContact]):
    """The whole directory, each contact once; `calls`: the export calls it took."""

    calls: int = 0


def budgeted(
    rt: Runtime, call: Callable[[Any], LeadLexResponse], *, pause_on_429: bool = True
) -> LeadLexResponse:
    """One LeadLex call under the shared budget (waits for a minute slot; never for a day)."""
    waited = 0.0
    while True:
        grant = rt.budget.acquire()
        if grant.ok:
            break
        wait = max(0.05, grant.retry_at - rt.clock())
        if grant.reason == "daily" or waited + wait > MAX_SLOT_WAIT_SECONDS:
            raise BudgetExhaustedError(
                f"no LeadLex budget ({grant.reason or 'refused'}) until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(grant.retry_at))}"
            )
        time.sleep(wait)
        waited += wait
    try:
        resp = call(rt.client)
    except RateLimitedError as err:
        if pause_on_429:
            observe_error(rt, err)
        elif err.rate is not None:
            rt.budget.observe(err.rate)
        raise
    except LeadLexError as err:
        observe_error(rt, err)
        raise
    rt.budget.observe(resp.rate)
    return resp


def parse_export(text: str) -> list[LeadLexContact]:
    """Contacts from the export's CSV (header row first; unknown columns kept in `fields`)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    out = []
    for row in reader:
        cells = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not cells.get("id"):
            continue
        out.append(_contact(cells))
    return out


def _contact(cells: dict[str, str]) -> LeadLexContact:
    return LeadLexContact(
        id=cells["id"],
        full_name=cells.get("full_name", ""),
        email=cells.get("email", ""),
        phone=cells.get("phone", ""),
        company_name=cells.get("company_name", "") or cells.get("company", ""),
        fields=cells,
    )


Window = tuple[datetime | None, datetime | None]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _created(contact: LeadLexContact) -> datetime | None:
    try:
        moment = datetime.fromisoformat(contact.fields.get("created_at", ""))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def split_window(window: Window, created: Iterable[datetime]) -> list[Window]:
    """Two overlapping windows covering `window` (whose export came back full), split at the
    median of the `created` times it returned (rows in any order), or, when they came oldest
    (newest) first, 2 x OVERLAP before the newest (after the oldest) row read: the part
    holding the rows read then holds fewer than the limit. At the window's middle when that
    point is within
    2 x OVERLAP of an edge; ExportIncomplete when the window is too narrow to split. The
    split point only changes how many calls the export takes, never what it reads."""
    lo, hi = window
    given = list(created)
    times = sorted(given)
    if not times:
        raise ExportIncomplete("a full export window has no created_at to split it by")
    middle = times[len(times) // 2]
    if len(times) > 2 and given == times:
        middle = times[-1] - 2 * OVERLAP  # the half below holds only rows read, minus the last
    elif len(times) > 2 and given == times[::-1]:
        middle = times[0] + 2 * OVERLAP

    def inside(moment: datetime) -> bool:
        return (lo is None or moment > lo + 2 * OVERLAP) and (
            hi is None or moment < hi - 2 * OVERLAP
        )

    if not inside(middle):
        if lo is not None and hi is not None:
            middle = lo + (hi - lo) / 2
        else:
            middle = times[0] if lo is None else times[-1]
        if not inside(middle):
            raise ExportIncomplete(
                f"more contacts than one export returns were created within "
                f"{4 * OVERLAP.total_seconds() * 1000:g} ms of {_iso(times[0])}; "
                "the export cannot be split further"
            )
    return [(lo, middle + OVERLAP), (middle - OVERLAP, hi)]


def export_contacts(
    rt: Runtime,
    fields: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    max_calls: int = MAX_EXPORT_CALLS,
) -> ExportedContacts:
    """Every contact, by exports split into `created_at` windows (see the module docstring):
    one call for fewer than `limit` (default EXPORT_LIMIT) contacts. ExportRefused when an
    export is refused or fails; ExportIncomplete (an ExportRefused) beyond `max_calls`."""
    limit = limit or EXPORT_LIMIT
    wanted = None if fields is None else list(dict.fromkeys(["id", "created_at", *fields]))
    seen: dict[str, LeadLexContact] = {}
    calls = 0
    todo: list[Window] = [(None, None)]
    while todo:
        lo, hi = todo.pop()
        if calls >= max_calls:
            raise ExportIncomplete(
                f"the LeadLex directory needs more than {max_calls} export calls: "
                f"{len(seen)} contacts read in {calls} calls",
                calls=calls,
                read=len(seen),
            )
        after = None if lo is None else _iso(lo)
        before = None if hi is None else _iso(hi)
        calls += 1

        def call(client: Any, a: str | None = after, b: str | None = before) -> LeadLexResponse:
            return client.export_contacts(
                fields=wanted, limit=limit, created_after=a, created_before=b
            )

        try:
            resp = budgeted(rt, call, pause_on_429=False)
        except RateLimitedError as err:
            wait = f", retry after {err.retry_after:.0f} s" if err.retry_after else ""
            raise ExportRefused(
                f"export refused: 429 {err.code}{wait}" + _so_far(calls, seen),
                calls=calls,
                read=len(seen),
            ) from err
        except LeadLexError as err:
            raise ExportRefused(
                f"export failed: {err}" + _so_far(calls, seen), calls=calls, read=len(seen)
            ) from err
        except BudgetExhaustedError:
            calls -= 1  # nothing was sent
            raise
        rows = parse_export(str(resp.data.get("csv", "")))
        for contact in rows:
            seen.setdefault(contact.id, contact)
        if len(rows) >= limit:
            try:
                todo.extend(split_window((lo, hi), filter(None, map(_created, rows))))
            except ExportIncomplete as err:
                raise ExportIncomplete(
                    f"{err.reason}: {len(seen)} contacts read in {calls} calls",
                    calls=calls,
                    read=len(seen),
                ) from None
    out = ExportedContacts(seen.values())
    out.calls = calls
    return out


def _so_far(calls: int, seen: dict[str, LeadLexContact]) -> str:
    return f" (export call {calls}; {len(seen)} contacts read before it)" if calls > 1 else ""


class ListWalk:
    """The paged list: `first()` costs one call and tells `pages`; `rest()` fetches the others."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.total = 0
        self.pages = 0
        self.contacts: list[LeadLexContact] = []

    def _page(self, page: int) -> list[LeadLexContact]:
        resp = budgeted(self.rt, lambda c: c.list_contacts(page=page, per_page=PER_PAGE))
        if page == 1:
            self.total = int(resp.meta.get("total") or 0)
            self.pages = max(1, math.ceil(self.total / PER_PAGE))
        items = resp.data.get("contacts") or []
        return [
            _contact({k: "" if v is None else str(v) for k, v in item.items()})
            for item in items
            if isinstance(item, dict) and item.get("id")
        ]

    def first(self) -> int:
        """Fetch page 1; returns how many calls the whole list costs (this one included)."""
        self.contacts = self._page(1)
        return self.pages

    def rest(self) -> Iterator[int]:
        """Fetch pages 2..pages, yielding each page number once fetched."""
        for page in range(2, self.pages + 1):
            self.contacts.extend(self._page(page))
            yield page
