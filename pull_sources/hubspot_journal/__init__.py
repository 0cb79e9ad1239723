"""HubSpot Webhooks Journal source (API 2026-03; reference crm-sources-2026.md §2).

The journal keeps three days of change events, read by offset with a client-credentials
token: no inbound URL, and a way back after an outage longer than HubSpot's webhook
retries (about 24 h). Turned on with HUBSPOT_JOURNAL=on (HUBSPOT_CLIENT_ID and
HUBSPOT_CLIENT_SECRET). Modes: `webhooks` (journal off), `journal` (no webhooks, the
receiver need not be public), `both` (webhooks for latency, the journal fills in
whatever was missed; the shared fingerprint makes a change seen twice count once).

- `api.py`          httpx client: cached token, journal reads, downloads, subscriptions
- `entries.py`      pure: a journal file -> ChangeEvents (worker.crm_events.hubspot rules)
- `position.py`     the stored offset in Redis, its fenced lease, lag figures
- `poller.py`       one poll (no Celery): read, hand over (worker.handoff), then advance
- `subscriptions.py` the journal subscriptions the mapping needs (`hubspot subscribe`)
- `tasks.py`        the beat task `leadlex_sync.poll_hubspot_journal` (thin)
"""
