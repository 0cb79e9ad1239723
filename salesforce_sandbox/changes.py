"""Build change-event bodies the way Salesforce fills them (for the simulator and tests).

`body(entity, change_type, record_ids, values, nulled=...)` returns the Avro record:
- CREATE / UNDELETE: every given value; changedFields empty.
- UPDATE: the given values and nulled fields only (everything else null), with
  `changedFields` / `nulledFields` as bitmaps over the schema (compound components as
  `P-0x..`), `LastModifiedDate` always among the changed fields.
- DELETE and GAP_*: header only (all body fields null); GAP_OVERFLOW has no record ids.
Values are keyed by object field names (`FirstName`, `MailingCity`); they are placed in
their compound (`Name.FirstName`, `MailingAddress.City`) here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from salesforce_sandbox import bitmaps
from salesforce_sandbox.schemas import SCHEMAS

HEADER_ONLY = frozenset(
    {"DELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"}
)


def _compound_fields(schema: dict[str, Any]) -> dict[str, list[str]]:
    named: dict[str, list[str]] = {}
    out: dict[str, list[str]] = {}
    for field in schema["fields"][1:]:
        for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
            if isinstance(branch, dict) and branch.get("type") == "record":
                named[branch["name"]] = [f["name"] for f in branch["fields"]]
                out[field["name"]] = named[branch["name"]]
            elif isinstance(branch, str) and branch in named:
                out[field["name"]] = named[branch]
    return out


def locate(entity: str, name: str, schema: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """Where an object field lives in the event: (top-level field, component or None)."""
    schema = schema or SCHEMAS[entity]
    top = [f["name"] for f in schema["fields"]]
    if name in top:
        return name, None
    for parent, children in _compound_fields(schema).items():
        prefix = "" if parent == "Name" else parent.removesuffix("Address")
        for child in children:
            if (parent == "Name" and child == name) or (
                parent.endswith("Address") and prefix + child == name
            ):
                return parent, child
    raise KeyError(f"{entity} has no field {name!r}")


def body(
    entity: str,
    change_type: str,
    record_ids: Iterable[str],
    values: Mapping[str, Any] | None = None,
    *,
    nulled: Iterable[str] = (),
    diff: Iterable[str] = (),
    commit_timestamp: int,
    commit_user: str = "005000000000001AAA",
    change_origin: str = "com/salesforce/api/rest/62.0;client=sandbox",
    transaction_key: str | None = None,
    sequence_number: int = 1,
    commit_number: int = 1,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Avro record of one change event (`schema`: the topic's current one, default
    the base schema of `entity`)."""
    schema = schema or SCHEMAS[entity]
    record: dict[str, Any] = {f["name"]: None for f in schema["fields"][1:]}
    changed: list[str] = []
    nulled_names: list[str] = []
    diff_names: list[str] = []
    if change_type not in HEADER_ONLY:
        given = dict(values or {})
        if change_type == "UPDATE":
            given.setdefault("LastModifiedDate", commit_timestamp)
        for name, value in given.items():
            parent, child = locate(entity, name, schema)
            if child is None:
                record[parent] = value
            else:
                record[parent] = record[parent] or {}
                record[parent][child] = value
            changed.append(f"{parent}.{child}" if child else parent)
        for name in nulled:
            parent, child = locate(entity, name, schema)
            if child is not None:
                record[parent] = record[parent] or {}
            nulled_names.append(f"{parent}.{child}" if child else parent)
        diff_names = [
            f"{p}.{c}" if c else p for p, c in (locate(entity, name, schema) for name in diff)
        ]
        # Compound records carry every component (null when not given).
        for parent, children in _compound_fields(schema).items():
            if isinstance(record[parent], dict):
                record[parent] = {c: record[parent].get(c) for c in children}
    ids = [] if change_type == "GAP_OVERFLOW" else list(record_ids)
    is_update = change_type == "UPDATE"
    record["ChangeEventHeader"] = {
        "entityName": entity,
        "recordIds": ids,
        "changeType": change_type,
        "changeOrigin": change_origin,
        "transactionKey": transaction_key or uuid.uuid4().hex,
        "sequenceNumber": sequence_number,
        "commitTimestamp": commit_timestamp,
        "commitNumber": commit_number,
        "commitUser": commit_user,
        "nulledFields": bitmaps.encode(schema, nulled_names) if is_update else [],
        "diffFields": bitmaps.encode(schema, diff_names) if diff_names else [],
        "changedFields": bitmaps.encode(schema, changed + nulled_names) if is_update else [],
    }
    return record
