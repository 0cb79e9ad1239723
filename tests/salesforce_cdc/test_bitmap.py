"""Bitmap decoding (changedFields, nulledFields): the reference examples, an independent encoder."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pull_sources.salesforce_cdc.bitmap import BitmapError, RecordShape, bit_positions, decode
from salesforce_sandbox import bitmaps
from salesforce_sandbox.schemas import SCHEMAS


def _record(name: str, fields: list[str]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "fields": [{"name": f, "type": "string"} for f in fields],
    }


def _wide_schema() -> dict[str, Any]:
    """31 top-level fields; positions 4 and 7 are compounds (7 reuses the record by name)."""
    fields: list[dict[str, Any]] = [
        {"name": f"F{i}", "type": ["null", "string"]} for i in range(31)
    ]
    fields[4] = {
        "name": "Name",
        "type": [
            "null",
            _record("PersonName", ["Salutation", "FirstName", "LastName", "MiddleName", "Suffix"]),
        ],
    }
    fields[7] = {"name": "OtherName", "type": ["null", "PersonName"]}
    return {"type": "record", "name": "E", "namespace": "com.sforce.eventbus", "fields": fields}


def test_reference_hex_example_positions() -> None:
    """`0x650004E0` marks positions 5, 6, 7, 10, 24, 26, 29 and 30 (reference §3)."""
    assert bit_positions("0x650004E0") == [5, 6, 7, 10, 24, 26, 29, 30]


def test_reference_list_with_compound_entries() -> None:
    """`['0x650004E0', '4-0x10', '7-0x06']` names top-level fields then Parent.Child components."""
    shape = RecordShape.of(_wide_schema())
    names = decode(["0x650004E0", "4-0x10", "7-0x06"], shape)
    assert names == [
        "F5", "F6", "OtherName", "F10", "F24", "F26", "F29", "F30",
        "Name.Suffix", "OtherName.FirstName", "OtherName.LastName",
    ]  # fmt: skip


def test_contact_name_components_decode_to_dotted_names() -> None:
    """A change of the Contact's last name decodes to `Name.LastName` via the Name record."""
    shape = RecordShape.of(SCHEMAS["Contact"])
    name_pos = shape.names.index("Name")
    assert decode([f"0x{1 << shape.names.index('Email'):X}", f"{name_pos}-0x4"], shape) == [
        "Email",
        "Name.LastName",
    ]


def test_plain_field_names_pass_through() -> None:
    """Headers that already carry field names (CometD style) decode to themselves."""
    shape = RecordShape.of(SCHEMAS["Lead"])
    assert decode(["Email", "Name.FirstName"], shape) == ["Email", "Name.FirstName"]
    assert decode([], shape) == []
    assert decode(None, shape) == []


@pytest.mark.parametrize(
    "values",
    [["0x"], ["0xZZ"], ["0x1", "99-0x1"], ["0x1", "1-0x1"], ["0x1", "0x2"], [f"0x{1 << 200:X}"]],
)
def test_malformed_or_mismatched_bitmaps_raise(values: list[str]) -> None:
    """Bad hex, a non-compound parent, a second top-level map or a bit past the schema raise."""
    with pytest.raises(BitmapError):
        decode(values, RecordShape.of(SCHEMAS["Contact"]))


def _all_names(schema: dict[str, Any]) -> list[str]:
    shape = RecordShape.of(schema)
    out = list(shape.names[1:])  # not the header
    for position, nested in shape.compounds.items():
        if position:
            out += [f"{shape.names[position]}.{child}" for child in nested.names]
    return out


WIDE = {
    "type": "record",
    "name": "Wide",
    "fields": [
        SCHEMAS["Contact"]["fields"][0],
        *({"name": f"Custom{i}__c", "type": ["null", "string"]} for i in range(150)),
        {"name": "Name", "type": ["null", _record("N", [f"Part{i}" for i in range(40)])]},
    ],
}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decode_inverts_the_independent_encoder(data: st.DataObject) -> None:
    """For any set of fields of the Contact, Lead or a 150-field schema, decode(encode(s)) == s."""
    schema = data.draw(st.sampled_from([SCHEMAS["Contact"], SCHEMAS["Lead"], WIDE]))
    chosen = data.draw(st.sets(st.sampled_from(_all_names(schema))))
    encoded = bitmaps.encode(schema, chosen)
    assert set(decode(encoded, RecordShape.of(schema))) == chosen
