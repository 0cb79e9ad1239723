"""LeadLex's contacts for onboarding (I/O): one export call, or the paged list.

Every call goes through the workers' Runtime: it takes the shared budget first (waiting for
a per-minute slot, never for the next day) and is counted like any LeadLex call.

- `export_contacts`: `GET /v1/contacts/export?limit=50000` (one call for up to 50,000
  contacts). The export has its own limit (10 an hour per workspace) and LeadLex's 429
  does not say which limit refused, so an export 429 is *not* taken as a pause of every
  worker (the headers are still observed); it raises `ExportRefused` and the caller offers
  the paged list.
- `ListWalk`: `GET /v1/contacts?per_page=100`, page by page; its first page says the total,
  so the caller can show the cost (`pages`) before spending the rest.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from worker.leadlex import LeadLexError, LeadLexResponse, RateLimitedError
from worker.onboarding.matching import LeadLexContact
from worker.pipeline.runtime import Runtime, observe_error

EXPORT_LIMIT = 50_000
PER_PAGE = 100
MAX_SLOT_WAIT_SECONDS = 120.0


class BudgetExhaustedError(RuntimeError):
    """No LeadLex call may be made today (or the workers are paused for longer)."""


class ExportRefused(RuntimeError):
    """The export was refused or failed; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def export_contacts(rt: Runtime, fields: Sequence[str] | None = None) -> list[LeadLexContact]:
    """Every contact (up to 50,000) with one export call; ExportRefused when refused."""
    try:
        resp = budgeted(
            rt,
            lambda client: client.export_contacts(fields=fields, limit=EXPORT_LIMIT),
            pause_on_429=False,
        )
    except RateLimitedError as err:
        wait = f", retry after {err.retry_after:.0f} s" if err.retry_after else ""
        raise ExportRefused(f"export refused: 429 {err.code}{wait}") from err
    except LeadLexError as err:
        raise ExportRefused(f"export failed: {err}") from err
    return parse_export(str(resp.data.get("csv", "")))


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
