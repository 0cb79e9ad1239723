"""One topic schema, ready to decode payloads with (pure: no gRPC here).

`Schema.parse(schema_id, schema_json)` parses the Avro JSON once (fastavro) and precomputes
the field layout the bitmaps refer to; `decode` reads one binary Avro payload into a dict.
The subscriber caches Schemas by id (schemas are fetched by id with GetSchema).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro

from pull_sources.salesforce_cdc.bitmap import RecordShape


class PayloadError(ValueError):
    """A payload could not be read with its schema (corrupt, or written with another one)."""


@dataclass(frozen=True, slots=True)
class Schema:
    schema_id: str
    raw: dict[str, Any]
    parsed: Any  # fastavro's parsed schema
    shape: RecordShape

    @classmethod
    def parse(cls, schema_id: str, schema_json: str) -> Schema:
        raw = json.loads(schema_json)
        return cls(schema_id, raw, fastavro.parse_schema(raw), RecordShape.of(raw))

    def decode(self, payload: bytes) -> dict[str, Any]:
        buffer = io.BytesIO(payload)
        try:
            record = fastavro.schemaless_reader(buffer, self.parsed, None)
        except (ValueError, EOFError, IndexError, TypeError, UnicodeDecodeError) as exc:
            raise PayloadError(f"payload does not decode with schema {self.schema_id}") from exc
        if not isinstance(record, dict) or buffer.tell() != len(payload):
            raise PayloadError(f"payload does not decode with schema {self.schema_id}")
        return record
