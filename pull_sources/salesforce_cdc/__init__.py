"""Salesforce Change Data Capture over the Pub/Sub API: the durable, field-exact Salesforce source.

Pure modules (no I/O): `bitmap` (changedFields/nulledFields/diffFields decoding), `schema`
(Avro schema + payload decoding), `change_events` (decoded events -> ChangeEvents, gaps,
filter, commit order). I/O: `auth` (OAuth token endpoint, httpx), `replay_store` (Redis),
`subscriber` (gRPC streams, hand-off through worker.handoff). `proto/` holds our
`pubsub_api.proto` and the stubs generated from it. Design: docs/architecture.md,
"Salesforce Change Data Capture".
"""
