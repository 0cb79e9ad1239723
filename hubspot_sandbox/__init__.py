"""hubspot_sandbox: a local HubSpot for dev mode and tests (reference crm-sources-2026.md §2, §5).

It serves the client-credentials token endpoint (scope checks, expiry), Webhooks
Journal subscriptions, the journal (global and local, earliest/latest/next, batch
reads, offsets that expire after a retention), entry downloads from its own signed
URLs, and pushes the same changes as signed webhooks (v3 + v1) to a receiver with
HubSpot's retry schedule. Time is a simulated clock (`/_hubspot/clock`), so hours of
changes and a day of failed pushes take no real time. It imports nothing from
`worker` or `webhook_app`. Endpoints: see app.py.

Where HubSpot's docs are silent (UNDOC) we chose, and a knob of HubSpotSandboxConfig
lets a test try the other behaviour:

| Behaviour (UNDOC)                   | Our default [knob]                                  |
|-------------------------------------|-----------------------------------------------------|
| token TTL                           | 1800 s [token_ttl_seconds]                          |
| download URL TTL                    | 300 s, then 403 AccessDenied [url_ttl_seconds]      |
| `next` at the tip                   | 204 [tip_response = "204" / "no_url"]               |
| expired / unknown offset (2026-03)  | 404 OBJECT_NOT_FOUND [expired_offset_status]        |
| journal file format                 | "journal-v1" (3P shape) [format: formats.FORMATS]   |
| merge / GDPR fields in the file     | webhook names; type GDPR_PRIVACY_DELETION           |
| empty `properties` in subscription  | all properties [empty_properties = "all" / "none"]  |
| subscription upsert key             | subscriptionType + objectTypeId + portalId          |
| batch `next` at the tip             | 200 with results []                                 |
| journal entry granularity           | one entry per recorded batch of changes             |
| webhook occurredAt vs journal       | equal for one change                                |

Documented behaviour kept: retention 3 days; 10 webhook retries over about 24 h with
jitter; batches of up to 100 events; no ordering (shuffled); both signatures sent.
Faults: force_429 / force_5xx (next N API calls), fail_downloads (next N downloads
500), download_delay_ms, webhook_duplicate_rate.
"""

from hubspot_sandbox.app import create_app
from hubspot_sandbox.clock import SimClock
from hubspot_sandbox.config import HubSpotSandboxConfig
from hubspot_sandbox.server import HubSpotSandboxServer
from hubspot_sandbox.state import HubSpotSandboxState

__all__ = [
    "HubSpotSandboxConfig",
    "HubSpotSandboxServer",
    "HubSpotSandboxState",
    "SimClock",
    "create_app",
]
