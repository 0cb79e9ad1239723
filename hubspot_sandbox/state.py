"""The simulated HubSpot account: tokens, journal subscriptions, the journal, the webhook outbox.

One lock serialises every decision; webhook deliveries (HTTP) happen outside it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from hubspot_sandbox.clock import SimClock
from hubspot_sandbox.config import HubSpotSandboxConfig
from hubspot_sandbox.model import ACTIONS, Change, Entry, Subscription

WEBHOOK_TYPES = {
    "CREATE": "object.creation",
    "DELETE": "object.deletion",
    "MERGE": "object.merge",
    "RESTORE": "object.restore",
}


@dataclass(slots=True)
class Token:
    value: str
    scopes: frozenset[str]
    expires_at: float  # simulated seconds


@dataclass(slots=True)
class Delivery:
    """One webhook batch on its retry schedule."""

    events: list[dict[str, Any]]
    due_at: float  # simulated seconds
    attempt: int = 0  # attempts made so far


@dataclass
class HubSpotSandboxState:
    """Everything the simulator knows; `lock` guards it."""

    config: HubSpotSandboxConfig = field(default_factory=HubSpotSandboxConfig)
    clock: SimClock = field(default_factory=SimClock)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._initial = HubSpotSandboxConfig(**vars(self.config))
        self._url_key = secrets.token_bytes(16)
        self.reset(keep_config=True)

    def reset(self, *, keep_config: bool = False) -> None:
        with self.lock:
            if not keep_config:
                self.config = HubSpotSandboxConfig(**vars(self._initial))
                self.clock.set_offset(0.0)
            self.rng = random.Random(self.config.seed)
            self.tokens: dict[str, Token] = {}
            self.subscriptions: dict[str, Subscription] = {}
            self.entries: list[Entry] = []
            self.by_offset: dict[str, int] = {}
            self.outbox: list[Delivery] = []
            self.event_ids = 0
            self.stats: Counter[str] = Counter()

    # ---- tokens ------------------------------------------------------------------------
    def issue_token(self, scopes: frozenset[str]) -> Token:
        with self.lock:
            token = Token(
                "sim-" + secrets.token_urlsafe(24),
                scopes,
                self.clock.now() + self.config.token_ttl_seconds,
            )
            self.tokens[token.value] = token
            self.stats["tokens_issued"] += 1
            return token

    def token(self, value: str) -> Token | None:
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.expires_at <= self.clock.now():
                return None
            return token

    def take_fault(self) -> str | None:
        """'429' or '5xx' when an API fault is armed (and use one up)."""
        with self.lock:
            if self.config.force_429 > 0:
                self.config.force_429 -= 1
                self.stats["faults_429"] += 1
                return "429"
            if self.config.force_5xx > 0:
                self.config.force_5xx -= 1
                self.stats["faults_5xx"] += 1
                return "5xx"
            return None

    # ---- subscriptions -----------------------------------------------------------------
    def upsert_subscription(self, body: dict[str, Any]) -> Subscription:
        with self.lock:
            now = self.clock.now_ms()
            key = (body["subscriptionType"], body["objectTypeId"], body.get("portalId"))
            for sub in self.subscriptions.values():
                if (sub.subscription_type, sub.object_type_id, sub.portal_id) == key:
                    sub.actions = list(body["actions"])
                    sub.properties = list(body.get("properties") or [])
                    sub.updated_at = now
                    return sub
            sub = Subscription(
                id=str(1000 + len(self.subscriptions) + 1),
                subscription_type=key[0],
                object_type_id=key[1],
                portal_id=key[2],
                actions=list(body["actions"]),
                properties=list(body.get("properties") or []),
                created_at=now,
                updated_at=now,
            )
            self.subscriptions[sub.id] = sub
            return sub

    def _journal_view(self, change: Change) -> Change | None:
        """The change as the journal records it (subscribed properties only), or None."""
        wanted_type = "GDPR_PRIVACY_DELETION" if change.action == "GDPR_DELETE" else "OBJECT"
        action = "GDPR_DELETE" if change.action == "GDPR_DELETE" else change.action
        for sub in self.subscriptions.values():
            if sub.subscription_type != wanted_type or action not in sub.actions:
                continue
            if sub.portal_id not in (None, change.portal_id):
                continue
            if wanted_type == "OBJECT" and sub.object_type_id != "0-1":
                continue
            if change.action not in ("CREATE", "UPDATE"):
                return change
            if sub.properties:
                props = {k: v for k, v in change.properties.items() if k in sub.properties}
            elif self.config.empty_properties == "all":
                props = dict(change.properties)
            else:
                props = {}
            if change.action == "UPDATE" and not props:
                return None
            return Change(
                change.portal_id, change.object_id, change.action, change.occurred_at_ms, props
            )
        return None

    # ---- recording changes -------------------------------------------------------------
    def record(self, changes: list[Change]) -> dict[str, Any]:
        """Write the changes to the journal (one entry) and queue them as webhooks."""
        with self.lock:
            now = self.clock.now()
            journal = [c for c in (self._journal_view(c) for c in changes) if c is not None]
            offset = None
            if journal:
                offset = str(uuid.uuid4())
                self.entries.append(Entry(offset, now, journal[0].portal_id, tuple(journal)))
                self.by_offset[offset] = len(self.entries) - 1
                self.stats["journal_entries"] += 1
            events = [e for c in changes for e in self._webhook_events(c)]
            if self.config.webhook_url and events:
                for i in range(0, len(events), 100):
                    self.outbox.append(Delivery(events[i : i + 100], now))
            self.stats["changes_recorded"] += len(changes)
            return {"offset": offset, "webhookEvents": len(events)}

    def _webhook_events(self, change: Change) -> list[dict[str, Any]]:
        base = {
            "portalId": change.portal_id,
            "appId": self.config.app_id,
            "occurredAt": change.occurred_at_ms,
            "objectId": change.object_id,
            "objectTypeId": "0-1",
            "changeSource": "CRM_UI",
            "sourceId": "userId:1001",
            "isSensitive": False,
        }
        out: list[dict[str, Any]] = []

        def add(subscription_type: str, **extra: Any) -> None:
            self.event_ids += 1
            event = {
                "eventId": self.event_ids,
                "subscriptionId": 4000 + len(out),
                "subscriptionType": subscription_type,
                "attemptNumber": 0,
                **base,
                **extra,
            }
            if subscription_type.startswith("contact."):
                event.pop("objectTypeId")
            out.append(event)

        if change.action == "GDPR_DELETE":
            add("contact.privacyDeletion")
            add("object.deletion")
        elif change.action == "MERGE":
            add(
                "object.merge",
                primaryObjectId=change.object_id,
                mergedObjectIds=list(change.merged_ids),
                newObjectId=change.new_object_id or change.object_id,
                numberOfPropertiesMoved=0,
            )
        elif change.action in WEBHOOK_TYPES:
            extra = {"changeFlag": "NEW"} if change.action == "CREATE" else {}
            add(WEBHOOK_TYPES[change.action], **extra)
        if change.action in ("CREATE", "UPDATE"):
            for name, value in change.properties.items():
                add("object.propertyChange", propertyName=name, propertyValue=value)
        return out

    # ---- journal reads -----------------------------------------------------------------
    def _live(self, index: int) -> bool:
        return self.entries[index].published_at >= self.clock.now() - self.config.retention_seconds

    def _visible(self, entry: Entry, portal: int | None) -> bool:
        return portal is None or entry.portal_id == portal

    def earliest(self, portal: int | None) -> Entry | None:
        with self.lock:
            for i, entry in enumerate(self.entries):
                if self._live(i) and self._visible(entry, portal):
                    return entry
            return None

    def latest(self, portal: int | None) -> Entry | None:
        with self.lock:
            for i in range(len(self.entries) - 1, -1, -1):
                if self._live(i) and self._visible(self.entries[i], portal):
                    return self.entries[i]
            return None

    def first(self, count: int, portal: int | None, newest: bool = False) -> list[Entry]:
        with self.lock:
            live = [
                e for i, e in enumerate(self.entries) if self._live(i) and self._visible(e, portal)
            ]
            return live[-count:] if newest else live[:count]

    def after(self, offset: str, count: int, portal: int | None) -> list[Entry] | None:
        """Up to `count` entries after `offset`; None when the offset expired or is unknown."""
        with self.lock:
            index = self.by_offset.get(offset)
            if index is None or not self._live(index):
                return None
            out = []
            for entry in self.entries[index + 1 :]:
                if self._visible(entry, portal):
                    out.append(entry)
                    if len(out) >= count:
                        break
            return out

    def entry(self, offset: str) -> Entry | None:
        """The entry at `offset`, or None when it expired or never existed."""
        with self.lock:
            index = self.by_offset.get(offset)
            if index is None or not self._live(index):
                return None
            return self.entries[index]

    # ---- downloads ---------------------------------------------------------------------
    def signed_query(self, offset: str) -> tuple[int, str]:
        expires = int(self.clock.now() + self.config.url_ttl_seconds)
        return expires, self._sign(offset, expires)

    def _sign(self, offset: str, expires: int) -> str:
        mac = hmac.new(self._url_key, f"{offset}:{expires}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def check_download(self, offset: str, expires: int, sig: str) -> Entry | str:
        """The entry, or why not: 'forbidden' (bad or expired URL), 'gone', 'fault'."""
        with self.lock:
            if not hmac.compare_digest(sig, self._sign(offset, expires)):
                return "forbidden"
            if expires < self.clock.now():
                self.stats["downloads_expired"] += 1
                return "forbidden"
            index = self.by_offset.get(offset)
            if index is None or not self._live(index):
                return "gone"
            if self.config.fail_downloads > 0:
                self.config.fail_downloads -= 1
                self.stats["downloads_failed"] += 1
                return "fault"
            self.stats["downloads"] += 1
            return self.entries[index]

    # ---- webhook push ------------------------------------------------------------------
    def deliver_due(self) -> dict[str, int]:
        """Attempt every delivery due by the simulated clock (HTTP outside the lock)."""
        with self.lock:
            url = self.config.webhook_url
            now = self.clock.now()
            due = [d for d in self.outbox if d.due_at <= now]
            self.outbox = [d for d in self.outbox if d.due_at > now]
            secret = self.config.client_secret
            timeout = self.config.webhook_timeout_seconds
        results: Counter[str] = Counter()
        for delivery in due:
            ok = url is not None and self._post(url, secret, delivery, timeout)
            with self.lock:
                if ok:
                    self.stats["webhook_batches_delivered"] += 1
                    self.stats["webhook_events_delivered"] += len(delivery.events)
                    results["delivered"] += 1
                    if self.rng.random() < self.config.webhook_duplicate_rate:
                        self.outbox.append(Delivery(delivery.events, now, delivery.attempt))
                    continue
                delays = self.config.webhook_retry_delays
                if delivery.attempt > len(delays):
                    self.stats["webhook_batches_given_up"] += 1
                    self.stats["webhook_events_given_up"] += len(delivery.events)
                    results["given_up"] += 1
                    continue
                jitter = 1 + (self.rng.random() - 0.5) * 0.2
                delay = delays[delivery.attempt - 1] * jitter
                self.outbox.append(Delivery(delivery.events, now + delay, delivery.attempt))
                results["failed"] += 1
        return dict(results)

    def _post(self, url: str, secret: str, delivery: Delivery, timeout: float) -> bool:
        events = [dict(e, attemptNumber=delivery.attempt) for e in delivery.events]
        with self.lock:
            if self.config.webhook_shuffle:
                self.rng.shuffle(events)
        delivery.attempt += 1
        body = json.dumps(events, separators=(",", ":")).encode()
        stamp = str(int(time.time() * 1000))  # the receiver checks it against real time
        v3 = base64.b64encode(
            hmac.new(
                secret.encode(), b"POST" + url.encode() + body + stamp.encode(), hashlib.sha256
            ).digest()
        ).decode()
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": v3,
            "X-HubSpot-Request-Timestamp": stamp,
            "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
            "X-HubSpot-Signature-Version": "v1",
        }
        with self.lock:
            self.stats["webhook_attempts"] += 1
        try:
            resp = httpx.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError:
            return False
        return 200 <= resp.status_code < 300

    def pending_deliveries(self) -> int:
        with self.lock:
            return len(self.outbox)


def parse_change(raw: Any, default_portal: int, now_ms: int) -> Change:
    """A Change from its control-endpoint JSON; ValueError names the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("changes[]: expected an object")
    action = raw.get("action", "UPDATE")
    if action not in ACTIONS:
        raise ValueError(f"action: expected one of {', '.join(ACTIONS)}")
    object_id = raw.get("objectId")
    if isinstance(object_id, bool) or not isinstance(object_id, int):
        raise ValueError("objectId: expected an integer")
    props = raw.get("properties") or {}
    if not isinstance(props, dict) or not all(
        isinstance(v, str) or v is None for v in props.values()
    ):
        raise ValueError("properties: expected {name: string or null}")
    occurred = raw.get("occurredAt", now_ms)
    if isinstance(occurred, bool) or not isinstance(occurred, int):
        raise ValueError("occurredAt: expected epoch milliseconds")
    merged = raw.get("mergedObjectIds") or []
    if not isinstance(merged, list) or not all(isinstance(m, int) for m in merged):
        raise ValueError("mergedObjectIds: expected a list of integers")
    portal = raw.get("portalId", default_portal)
    return Change(
        portal_id=int(portal),
        object_id=object_id,
        action=action,
        occurred_at_ms=occurred,
        properties=dict(props),
        merged_ids=tuple(merged),
        new_object_id=raw.get("newObjectId"),
    )
