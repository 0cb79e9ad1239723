"""A local Salesforce org for Change Data Capture: Pub/Sub API over gRPC plus the OAuth token
endpoint (dev mode: `leadlex-sync dev --salesforce cdc`; tests; `python -m salesforce_sandbox`).

`server` (the two servers, rules and knobs), `bus` (stored events, opaque replay ids,
retention), `schemas` (Avro schemas shaped like Salesforce's), `changes` (event bodies as
Salesforce fills them), `bitmaps` (field names -> header bitmaps, written independently of
the subscriber's decoder). Fidelity and gaps: docs/architecture.md.
"""
