"""Encode field names as Pub/Sub header bitmaps (the simulator's side of bitmap decoding).

Written independently of the subscriber's decoder (pull_sources.salesforce_cdc.bitmap), so
the property tests of one against the other mean something: this side walks the schema
JSON directly and builds each hex string from a '0'/'1' digit string.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _record_fields(field_type: Any, named: dict[str, dict[str, Any]]) -> list[str] | None:
    branches = field_type if isinstance(field_type, list) else [field_type]
    for branch in branches:
        if isinstance(branch, str) and branch in named:
            branch = named[branch]
        if isinstance(branch, dict) and branch.get("type") == "record":
            named[branch["name"]] = branch
            return [f["name"] for f in branch["fields"]]
    return None


def _hex(positions: Iterable[int]) -> str:
    wanted = set(positions)
    top = max(wanted)
    digits = "".join("1" if i in wanted else "0" for i in range(top, -1, -1))
    return "0x" + format(int(digits, 2), "X")


def encode(schema: dict[str, Any], field_names: Iterable[str]) -> list[str]:
    """`['0x…', 'P-0x…', …]` for `field_names` (top-level names and `Parent.Child`)."""
    named: dict[str, dict[str, Any]] = {}
    top: list[str] = []
    children: dict[str, list[str]] = {}
    for field in schema["fields"]:
        top.append(field["name"])
        nested = _record_fields(field["type"], named)
        if nested is not None and field["name"] != "ChangeEventHeader":
            children[field["name"]] = nested
    top_bits: set[int] = set()
    nested_bits: dict[int, set[int]] = {}
    for name in field_names:
        parent, dot, child = name.partition(".")
        if dot:
            position = top.index(parent)
            nested_bits.setdefault(position, set()).add(children[parent].index(child))
        else:
            top_bits.add(top.index(name))
    if not top_bits and not nested_bits:
        return []
    out = [_hex(top_bits) if top_bits else "0x0"]
    for position in sorted(nested_bits):
        out.append(f"{position}-{_hex(nested_bits[position])}")
    return out
