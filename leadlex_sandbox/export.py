"""GET /v1/contacts/export (reference §7.8): the contacts as one streamed CSV.

Query: `limit` (default 10,000, at most 50,000), `fields` (comma list; default
`id,full_name,email,phone,job_title,company_name,linkedin_url,tags,created_at`),
`created_after`, `created_before` (ISO 8601), `tag` (repeatable; a contact needs every
one), `list_id` (the sandbox has no lists: 404). Answer `text/csv; charset=utf-8` with
`Content-Disposition: attachment; filename="contacts-export.csv"`, the header row first,
a multi-tag cell comma-joined (the csv module quotes it). Rows in insertion order, or
(`export_order="shuffled"`) any `limit` of the matches in any order; `created_after` /
`created_before` exclude their bound unless `export_bounds_inclusive` (both undocumented).

The export has its own limit (`export_per_hour`, default 10, per sliding
`export_window_seconds`), on top of the plan's limits: over it -> 429 `rate_limited`
whose message names the export limit; such a refusal is not counted against the plan.
Besides the documented fields the sandbox also exports `updated_date`, `first_name` and
`last_name` when asked (undocumented; a client must not rely on them).
"""

from __future__ import annotations

import csv
import io
import math
import random
from urllib.parse import parse_qs

from leadlex_sandbox.contacts import Call, Result
from leadlex_sandbox.errors import ApiError, not_found, validation_error
from leadlex_sandbox.store import Contact, parse_iso
from leadlex_sandbox.validation import uuid_problem

MAX_LIMIT = 50_000
DEFAULT_LIMIT = 10_000
DEFAULT_FIELDS: tuple[str, ...] = (
    "id",
    "full_name",
    "email",
    "phone",
    "job_title",
    "company_name",
    "linkedin_url",
    "tags",
    "created_at",
)
EXTRA_FIELDS: tuple[str, ...] = ("first_name", "last_name", "updated_date")
EXPORT_FIELDS: frozenset[str] = frozenset((*DEFAULT_FIELDS, *EXTRA_FIELDS))
CSV_TYPE = "text/csv; charset=utf-8"


def export_contacts(call: Call) -> Result:
    """The CSV export; raises ApiError 400 / 404 / 429."""
    multi = parse_qs(call.query_string, keep_blank_values=True)
    errors: dict[str, str] = {}
    limit = DEFAULT_LIMIT
    raw_limit = call.query.get("limit")
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            errors["limit"] = f"Must be an integer between 1 and {MAX_LIMIT}"
        else:
            limit = int(raw_limit)
    fields = list(DEFAULT_FIELDS)
    raw_fields = call.query.get("fields")
    if raw_fields is not None:
        fields = [f.strip() for f in raw_fields.split(",") if f.strip()]
        unknown = [f for f in fields if f not in EXPORT_FIELDS]
        if not fields or unknown:
            errors["fields"] = "Must be a comma list of " + ", ".join(sorted(EXPORT_FIELDS))
    bounds = {}
    for name in ("created_after", "created_before"):
        if name in call.query:
            bounds[name] = parse_iso(call.query[name])
            if bounds[name] is None:
                errors[name] = "Must be an ISO 8601 timestamp"
    list_id = call.query.get("list_id")
    if list_id is not None and uuid_problem(list_id):
        errors["list_id"] = "Must be a UUID"
    if errors:
        raise validation_error(errors)
    if list_id is not None:
        raise not_found("List")
    _take_export_slot(call)
    tags = [t for t in multi.get("tag", []) if t]
    after, before = bounds.get("created_after"), bounds.get("created_before")
    inclusive = call.config.export_bounds_inclusive
    rows: list[Contact] = []
    for contact in call.state.store.all():
        created = parse_iso(contact.created_date)
        if after is not None and (
            created is None or created < after or (created == after and not inclusive)
        ):
            continue
        if before is not None and (
            created is None or created > before or (created == before and not inclusive)
        ):
            continue
        if any(t not in contact.tags for t in tags):
            continue
        rows.append(contact)
    if call.config.export_order == "shuffled":
        random.shuffle(rows)
    rows = rows[:limit]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    for contact in rows:
        writer.writerow([_cell(contact, f) for f in fields])
    return Result(
        200,
        {},
        raw=out.getvalue().encode("utf-8"),
        content_type=CSV_TYPE,
        headers={"Content-Disposition": 'attachment; filename="contacts-export.csv"'},
    )


def _take_export_slot(call: Call) -> None:
    config = call.config
    hits = call.state.export_hits
    horizon = call.now - config.export_window_seconds
    while hits and hits[0] <= horizon:
        hits.popleft()
    if len(hits) >= config.export_per_hour:
        oldest = hits[len(hits) - config.export_per_hour] if config.export_per_hour else call.now
        wait = oldest + config.export_window_seconds - call.now
        raise ApiError(
            429,
            "rate_limited",
            f"Export limit exceeded ({config.export_per_hour} per hour)",
            retry_after=max(1, math.ceil(wait)),
        )
    hits.append(call.now)


def _cell(contact: Contact, name: str) -> str:
    if name == "tags":
        return ",".join(contact.tags)
    if name == "created_at":
        return contact.created_date
    value = getattr(contact, name)
    return "" if value is None else str(value)
