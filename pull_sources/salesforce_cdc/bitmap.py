"""Decode the `changedFields` / `nulledFields` / `diffFields` bitmaps of a CDC event header (pure).

Over the Pub/Sub API these header fields are bitmaps, not field names (reference §3,
"Bitmap decoding"). A value is a list of strings such as `['0x650004E0', '4-0x10']`:

1. The first element, when it starts with `0x`, is hex over the event's top-level Avro
   fields: bit i set (counting from the least-significant bit) names the i-th field of the
   schema (zero-based). `0x650004E0` -> positions 5, 6, 7, 10, 24, 26, 29, 30.
2. Each later `P-0xHEX` is a compound field: P is the parent's top-level position; the hex
   is decoded against the fields of the parent's record type (the non-null branch of its
   union), and the results are named `Parent.Child` (e.g. `Name.LastName`).

Record types may be referenced by name after their first definition (Salesforce's schemas
define `Address` once and reuse it), so lookups go through the schema's named types.
A bit with no field behind it means the bitmap and the schema disagree: `BitmapError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class BitmapError(ValueError):
    """A bitmap string is malformed or names a field the schema does not have."""


@dataclass(frozen=True, slots=True)
class RecordShape:
    """A record's field names in schema order, and the record shapes of compound fields."""

    names: tuple[str, ...]
    compounds: Mapping[int, RecordShape]  # position -> nested record shape

    @classmethod
    def of(cls, schema: Mapping[str, Any]) -> RecordShape:
        """The shape of a top-level Avro record schema (the parsed schema JSON)."""
        named: dict[str, Mapping[str, Any]] = {}
        _collect_named(schema, schema.get("namespace", ""), named)
        return _shape(schema, schema.get("namespace", ""), named)


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_named(node: Any, namespace: str, out: dict[str, Mapping[str, Any]]) -> None:
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, namespace, out)
    elif isinstance(node, Mapping):
        kind = node.get("type")
        if kind in ("record", "enum", "fixed") and isinstance(node.get("name"), str):
            namespace = node.get("namespace", namespace)
            full = _full_name(node["name"], namespace)
            out[full] = node
            out.setdefault(node["name"], node)  # short name, for schemas that use it
        if kind == "record":
            for field in node.get("fields", ()):
                _collect_named(field.get("type"), namespace, out)
        elif kind in ("array", "map"):
            _collect_named(node.get("items") or node.get("values"), namespace, out)


def _record_branch(
    node: Any, namespace: str, named: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The record type behind a field type: itself, a named reference, or a union branch."""
    if isinstance(node, list):
        for branch in node:
            found = _record_branch(branch, namespace, named)
            if found is not None:
                return found
        return None
    if isinstance(node, str):
        ref = named.get(_full_name(node, namespace)) or named.get(node)
        return ref if ref is not None and ref.get("type") == "record" else None
    if isinstance(node, Mapping) and node.get("type") == "record":
        return node
    return None


def _shape(
    record: Mapping[str, Any], namespace: str, named: Mapping[str, Mapping[str, Any]]
) -> RecordShape:
    namespace = record.get("namespace", namespace)
    names: list[str] = []
    compounds: dict[int, RecordShape] = {}
    for position, field in enumerate(record.get("fields", ())):
        names.append(str(field["name"]))
        nested = _record_branch(field.get("type"), namespace, named)
        if nested is not None and nested is not record:
            compounds[position] = _shape(nested, namespace, named)
    return RecordShape(tuple(names), compounds)


def bit_positions(hex_text: str) -> list[int]:
    """Positions of the set bits of `0x...`, least-significant first."""
    if not hex_text.lower().startswith("0x") or len(hex_text) < 3:
        raise BitmapError(f"not a hex bitmap: {hex_text[:40]!r}")
    try:
        value = int(hex_text[2:], 16)
    except ValueError:
        raise BitmapError(f"not a hex bitmap: {hex_text[:40]!r}") from None
    return [i for i in range(value.bit_length()) if value >> i & 1]


def _names(positions: Iterable[int], names: Sequence[str], where: str) -> list[str]:
    out = []
    for position in positions:
        if position >= len(names):
            raise BitmapError(f"bit {position} of {where} has no field in the schema")
        out.append(names[position])
    return out


def decode(values: Sequence[str] | None, shape: RecordShape) -> list[str]:
    """Field names a bitmap list marks, top-level first, then `Parent.Child` for compounds.

    Plain field names (as CometD clients receive them) pass through unchanged, so a header
    that already carries names decodes to itself."""
    if not values:
        return []
    out: list[str] = []
    for index, item in enumerate(values):
        text = str(item).strip()
        if index == 0 and text.lower().startswith("0x"):
            out += _names(bit_positions(text), shape.names, "the top-level bitmap")
            continue
        parent_text, sep, hex_text = text.partition("-")
        if sep and parent_text.isdigit() and hex_text.lower().startswith("0x"):
            parent = int(parent_text)
            nested = shape.compounds.get(parent)
            if nested is None:
                raise BitmapError(f"{text[:40]!r}: field {parent} is not a compound field")
            parent_name = shape.names[parent]
            children = _names(bit_positions(hex_text), nested.names, f"{parent_name}'s bitmap")
            out += [f"{parent_name}.{child}" for child in children]
            continue
        if text.lower().startswith("0x") or not text:
            raise BitmapError(f"{text[:40]!r}: a top-level bitmap must come first")
        out.append(text)  # already a field name
    return out
