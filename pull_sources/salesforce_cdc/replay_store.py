"""Where each topic's subscription resumes: the replay id in Redis, and the subscriber's alerts.

Keys (prefix `lls:` like every other key):
- `lls:cdc:replay` (hash): `{org}:{topic}` -> JSON {replay_id (hex), at (epoch s)}. Written
  only after the events up to that id were handed off (inbox + broker) or dead-lettered.
- `lls:cdc:alerts` (hash): `{org}:{topic}` -> JSON {at, message}: the last condition an
  operator must act on (a replay id Salesforce refused as too old); `leadlex-sync status`
  shows it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

REPLAY = "lls:cdc:replay"
ALERTS = "lls:cdc:alerts"


@dataclass(frozen=True, slots=True)
class Position:
    replay_id: bytes
    stored_at: float


def _field(org: str, topic: str) -> str:
    return f"{org}:{topic}"


def _load(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class ReplayStore:
    def __init__(self, client: redis.Redis, org: str) -> None:
        self.redis = client
        self.org = org

    def get(self, topic: str) -> Position | None:
        data = _load(self.redis.hget(REPLAY, _field(self.org, topic)))
        if data is None:
            return None
        try:
            return Position(bytes.fromhex(str(data["replay_id"])), float(data["at"]))
        except (KeyError, ValueError, TypeError):
            return None  # unreadable: treated as no stored position

    def put(self, topic: str, replay_id: bytes) -> None:
        value = json.dumps({"replay_id": replay_id.hex(), "at": round(time.time(), 3)})
        self.redis.hset(REPLAY, _field(self.org, topic), value)

    def forget(self, topic: str) -> None:
        self.redis.hdel(REPLAY, _field(self.org, topic))

    def alert(self, topic: str, message: str) -> None:
        value = json.dumps({"at": round(time.time(), 3), "message": message})
        self.redis.hset(ALERTS, _field(self.org, topic), value)

    @staticmethod
    def overview(client: redis.Redis) -> dict[str, dict[str, Any]]:
        """Per `{org}:{topic}`: stored replay id and time, and the last alert (for status)."""
        out: dict[str, dict[str, Any]] = {}
        for key, name in ((REPLAY, "position"), (ALERTS, "alert")):
            for field, raw in client.hgetall(key).items():
                label = field.decode() if isinstance(field, bytes) else str(field)
                out.setdefault(label, {})[name] = _load(raw)
        return out
