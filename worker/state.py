"""Sync state in Redis: dedupe ledger, record snapshots, links, staged changes, commits.

Every multi-key change is one Lua script, so several workers on several machines
can run at once and a worker killed at any line leaves a state the next attempt
can finish from. Key layout (all under `lls:`):

- `lls:seen:{fingerprint}` (string): dedupe ledger, TTL `DEDUPE_TTL_SECONDS` (7 days).
- `lls:snap:{src}:{acct}:{id}` (hash): a record's last known CRM values, field ->
  [value, ts_ms].
- `lls:links` (hash): `{src}:{acct}:{id}` -> LeadLex id (`acct` empty = any account);
  `lls:rlinks:{leadlex_id}` (set) is the reverse index.
- `lls:gone` (hash): `{src}:{acct}:{id}` -> deletion time (record no longer synced).
- `lls:unlinked:{src}:{id}` (hash): parked events of a record with no link,
  fingerprint -> event.
- `lls:stage:{leadlex_id}` (hash): staged LeadLex field -> [value, ts_ms, origin].
- `lls:applied:{leadlex_id}` (hash): last value applied per field -> [value, ts_ms]
  (value null: unknown since a PATCH of unknown outcome, so it is sent again);
  `_updated` -> LeadLex's updated_date after our last write.
- `lls:notes:{leadlex_id}` (hash): per CRM record, the notes text already appended.
- `lls:intent:{leadlex_id}` (string, JSON): the write in flight or of unknown outcome:
  its Idempotency-Key, body, staged items, fresh `updated_date` baseline, `sent_at`.
  Only a commit naming that key removes it (see "Fencing" below).
- `lls:due` (zset): contacts with staged changes -> due time (first change + coalesce).
- `lls:lease:{leadlex_id}` (string, expiring): a flush was dispatched or parked until
  then; the pump leaves the contact alone while it lives.
- `lls:lock:{leadlex_id}` (string, expiring): the fenced flush lease: the holder's token.
- `lls:fence:{leadlex_id}` (string): the contact's fence counter; INCR mints each token.
- `lls:surfaced:{idempotency_key}` (string, 7 days): that write was surfaced as a dead
  letter already (one `notes_uncertain` letter per write).
- `lls:create:{src}:{acct}:{id}` (hash): the create-at-most-once claim of a CRM record
  (state pending/done, Idempotency-Key, sent_at, email, the created LeadLex id);
  `lls:create:lease:{record}` (string, expiring) is held while one worker POSTs;
  `lls:create:due` (zset) holds pending claims -> when their lost answer may be settled.
- `lls:attempts:{leadlex_id}` (hash): transient failure count and first failure time.
- `lls:inbox` (hash) and `lls:inbox:at` (zset): every event the receiver acknowledged,
  fingerprint -> event / -> when, until a sweep finds it taken in (seen, parked or
  dead-lettered). One still not taken in after the broker's visibility timeout was lost
  by the broker and is enqueued again (`sweep_inbox`; see `worker.pipeline.recover_lost`).

Staged notes use the field name `notes|{record_key}` so that each CRM record's notes
text is tracked (and appended) on its own; a note replayed from the dead-letter store is
staged as `notes|dlq:{letter_id}` and appended verbatim, once.

Fencing: a flush holds the contact's lease with a token from INCR of its fence counter
(`acquire`). Every flush-time state change is a Lua step that refuses a token other than
the counter's current value (a newer holder has taken over), with one exception that
keeps information: the commit of a write's outcome names the write's Idempotency-Key and
is accepted while the intent still carries that key, whoever holds the lease (the
answer is evidence about that write; once another flush has settled the intent, the
commit is refused). `arm` writes the intent and extends the lease in one step, right
before the PATCH.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.metrics import COUNTERS_KEY

P = "lls:"
DUE = f"{P}due"
LINKS = f"{P}links"
INBOX = f"{P}inbox"
INBOX_AT = f"{P}inbox:at"
GONE = f"{P}gone"
NOTES_PREFIX = "notes|"


def seen_key(fp: str) -> str:
    return f"{P}seen:{fp}"


def snap_key(record_key: str) -> str:
    return f"{P}snap:{record_key}"


def stage_key(contact: str) -> str:
    return f"{P}stage:{contact}"


def applied_key(contact: str) -> str:
    return f"{P}applied:{contact}"


def notes_key(contact: str) -> str:
    return f"{P}notes:{contact}"


def intent_key_of(contact: str) -> str:
    return f"{P}intent:{contact}"


def lease_key(contact: str) -> str:
    return f"{P}lease:{contact}"


def lock_key(contact: str) -> str:
    return f"{P}lock:{contact}"


def fence_key(contact: str) -> str:
    return f"{P}fence:{contact}"


def create_key(record_key: str) -> str:
    return f"{P}create:{record_key}"


def create_lease_key(record_key: str) -> str:
    return f"{P}create:lease:{record_key}"


CREATE_DUE = f"{P}create:due"
DLQ_STREAM = "lls:dlq"  # worker.deadletter.STREAM (kept here for the commit's Lua)


def attempts_key(contact: str) -> str:
    return f"{P}attempts:{contact}"


def unlinked_key(source: str, object_id: str) -> str:
    return f"{P}unlinked:{source}:{object_id}"


def rlinks_key(contact: str) -> str:
    return f"{P}rlinks:{contact}"


def link_field(source: str, account: str, object_id: str) -> str:
    return f"{source}:{account}:{object_id}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# The first step of ingest in one round trip: dedupe check, deletion mark, link, and (for
# events with values) the snapshot merge. KEYS: seen, gone, links, snapshot
# ARGV: record field, any-account field, merge (0/1), ts_ms, then field, value-json pairs.
# Returns {1} when seen, else {0, gone or false, link or false, snapshot...}.
_PRELUDE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
local gone = redis.call('HGET', KEYS[2], ARGV[1])
local link = redis.call('HGET', KEYS[3], ARGV[1])
if not link then link = redis.call('HGET', KEYS[3], ARGV[2]) end
local ts = tonumber(ARGV[4])
if ARGV[3] == '1' and ((not gone) or tonumber(gone) < ts) then
  for i = 5, #ARGV, 2 do
    local cur = redis.call('HGET', KEYS[4], ARGV[i])
    if (not cur) or tonumber(cjson.decode(cur)[2]) <= ts then
      redis.call('HSET', KEYS[4], ARGV[i], cjson.encode({cjson.decode(ARGV[i + 1]), ts}))
    end
  end
end
local out = {0, gone or false, link or false}
if ARGV[3] == '1' then
  local snap = redis.call('HGETALL', KEYS[4])
  for i = 1, #snap do out[#out + 1] = snap[i] end
end
return out
"""

# Stage LeadLex field values for a contact, never older than what was applied or staged;
# in the same step mark the event seen, unpark it, lease a newly due contact and count.
# KEYS: stage, applied, due, seen ('' = none), unlinked, counters, lease
# ARGV: due_at, seen_ttl, fp, lease_ms, staged-counter, stale-counter, coalesced-counter
#       ('' = not counted), extra stale, then field, value, ts, origin (4 per field).
# Returns {newly_due (0/1), staged count, stale count}.
_STAGE = """
local staged, stale = 0, 0
for i = 9, #ARGV, 4 do
  local f, v, ts, origin = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local newer = true
  local a = redis.call('HGET', KEYS[2], f)
  if a and tonumber(cjson.decode(a)[2]) > ts then newer = false end
  local s = redis.call('HGET', KEYS[1], f)
  if newer and s and tonumber(cjson.decode(s)[2]) > ts then newer = false end
  if newer then
    redis.call('HSET', KEYS[1], f, cjson.encode({v, ts, cjson.decode(origin)}))
    staged = staged + 1
  else
    stale = stale + 1
  end
end
local added = 0
if redis.call('HLEN', KEYS[1]) > 0 then
  added = redis.call('ZADD', KEYS[3], 'NX', ARGV[1], KEYS[1]:sub(11))
end
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], '1', 'EX', ARGV[2]) end
redis.call('HDEL', KEYS[5], ARGV[3])
if added == 1 then redis.call('SET', KEYS[7], '1', 'PX', ARGV[4]) end
if ARGV[5] ~= '' then
  if staged > 0 then redis.call('HINCRBY', KEYS[6], ARGV[5], staged) end
  local all_stale = stale + tonumber(ARGV[8])
  if all_stale > 0 then redis.call('HINCRBY', KEYS[6], ARGV[6], all_stale) end
  if added == 0 and staged > 0 then redis.call('HINCRBY', KEYS[6], ARGV[7], 1) end
end
return {added, staged, stale}
"""

# Commit a flush's outcome. KEYS: stage, applied, due, intent, notes, attempts, fence, dlq,
# counters. ARGV: contact, updated_date, now_due, token, intent key ('' = none), letters
# (JSON list of {fields, counters, once}: a letter with a `once` key is added only by the
# first step that sets that key, so one write is surfaced once), forget (JSON list of
# fields whose applied value becomes unknown), reset attempts ('1'/'0'), then triples of (field,
# staged-json-as-read, kind) where kind is 'f' (plain field: record [value, ts] in applied
# unless a newer one is there), 'n' (notes: record the CRM text in the notes hash under the
# record key) or 'd' (drop only).
# Accepted when the token is the fence counter's current value, or when the intent still
# carries the given key (the outcome of that very write); refused when a key is given and
# the intent carries another one. Returns -1 when refused, else the staged fields left.
_COMMIT = """
local current = redis.call('GET', KEYS[7]) == ARGV[4]
local raw_intent = redis.call('GET', KEYS[4])
local mine = false
if ARGV[5] ~= '' and raw_intent then
  mine = cjson.decode(raw_intent)['key'] == ARGV[5]
end
if not (current or mine) then return -1 end
if ARGV[5] ~= '' and raw_intent and not mine then return -1 end
for i = 9, #ARGV, 3 do
  local f, raw, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local st = cjson.decode(raw)
  if kind == 'f' then
    local a = redis.call('HGET', KEYS[2], f)
    if (not a) or tonumber(cjson.decode(a)[2]) <= tonumber(st[2]) then
      redis.call('HSET', KEYS[2], f, cjson.encode({st[1], st[2]}))
    end
  elseif kind == 'n' then
    redis.call('HSET', KEYS[5], string.sub(f, 7), st[1])
  end
  if redis.call('HGET', KEYS[1], f) == raw then redis.call('HDEL', KEYS[1], f) end
end
for _, f in ipairs(cjson.decode(ARGV[7])) do
  local a = redis.call('HGET', KEYS[2], f)
  if a then
    redis.call('HSET', KEYS[2], f, cjson.encode({cjson.null, cjson.decode(a)[2]}))
  end
end
if #cjson.decode(ARGV[7]) > 0 then redis.call('HDEL', KEYS[2], '_updated') end
for _, letter in ipairs(cjson.decode(ARGV[6])) do
  local once = letter['once']
  if once == '' or redis.call('SET', once, '1', 'NX', 'EX', 604800) then
    local args = {}
    for k, v in pairs(letter['fields']) do
      args[#args + 1] = k
      args[#args + 1] = v
    end
    redis.call('XADD', KEYS[8], '*', unpack(args))
    for _, counter in ipairs(letter['counters']) do redis.call('HINCRBY', KEYS[9], counter, 1) end
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], '_updated', ARGV[2]) end
if mine then redis.call('DEL', KEYS[4]) end
if ARGV[8] == '1' then redis.call('DEL', KEYS[6]) end
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[3], 'LT', ARGV[3], ARGV[1])
return redis.call('HLEN', KEYS[1])
"""

# Inbox entries acknowledged before `cutoff`: drop those taken in (event seen, parked as
# unlinked, or gone from the hash); move the others to `now` and return them.
# KEYS: inbox, inbox:at   ARGV: cutoff, now, limit, prefix
_SWEEP_INBOX = """
local out = {}
local fps = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, fp in ipairs(fps) do
  local raw = redis.call('HGET', KEYS[1], fp)
  local taken = (not raw) or redis.call('EXISTS', ARGV[4] .. 'seen:' .. fp) == 1
  if not taken then
    local e = cjson.decode(raw)
    local parked = ARGV[4] .. 'unlinked:' .. tostring(e.source) .. ':' .. tostring(e.object_id)
    taken = redis.call('HEXISTS', parked, fp) == 1
  end
  if taken then
    redis.call('HDEL', KEYS[1], fp)
    redis.call('ZREM', KEYS[2], fp)
  else
    redis.call('ZADD', KEYS[2], ARGV[2], fp)
    table.insert(out, raw)
  end
end
return out
"""

# A PATCH of unknown outcome may have changed these fields in LeadLex: their applied values
# become unknown (null; the CRM time is kept, so ordering still holds) and so does LeadLex's
# updated_date. KEYS: applied   ARGV: fields
_FORGET = """
for i = 1, #ARGV do
  local a = redis.call('HGET', KEYS[1], ARGV[i])
  if a then
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode({cjson.null, cjson.decode(a)[2]}))
  end
end
redis.call('HDEL', KEYS[1], '_updated')
return 1
"""

# One dead letter, once. KEYS: dlq, counters   ARGV: letter JSON ({fields, counters, once}).
_LETTER = """
local letter = cjson.decode(ARGV[1])
local once = letter['once']
if once ~= '' and not redis.call('SET', once, '1', 'NX', 'EX', 604800) then return 0 end
local args = {}
for k, v in pairs(letter['fields']) do
  args[#args + 1] = k
  args[#args + 1] = v
end
redis.call('XADD', KEYS[1], '*', unpack(args))
for _, counter in ipairs(letter['counters']) do redis.call('HINCRBY', KEYS[2], counter, 1) end
return 1
"""

# The fenced lease. KEYS: lock, fence.
# Acquire: ARGV ttl_ms; returns the new token, or false while another holder's lease lives.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# Release: ARGV token. Only the holder's own lease is deleted.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Arm a write right before sending it: the token must still be the current one; then the
# intent is written and the lease extended (taken again if it had lapsed with no newer
# holder). KEYS: lock, fence, intent   ARGV: token, ttl_ms, intent-json.
# Returns 1, or 0 when a newer flush has the contact.
_ARM = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
return 1
"""

# Pick up to N due contacts without a live lease, oldest due first, and lease them.
# KEYS: due   ARGV: now, lease_seconds, n, prefix
_CLAIM_DUE = """
local out = {}
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, c in ipairs(rows) do
  if #out >= tonumber(ARGV[3]) then break end
  local lk = ARGV[4] .. 'lease:' .. c
  if redis.call('EXISTS', lk) == 0 then
    redis.call('SET', lk, '1', 'PX', math.floor(tonumber(ARGV[2]) * 1000))
    table.insert(out, c)
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter to add inside a state step: its stream fields, the counter fields to
    increment, and an optional `once` key (only the first step that sets it adds it)."""

    fields: dict[str, str]
    counters: tuple[str, ...]
    once: str = ""

    def to_lua(self) -> dict[str, Any]:
        return {"fields": self.fields, "counters": list(self.counters), "once": self.once}


@dataclass(frozen=True, slots=True)
class Staged:
    """One staged LeadLex field as read for a flush (raw = the exact stored JSON)."""

    field: str
    value: str
    ts_ms: int
    origin: dict[str, Any]
    raw: str


class State:
    """All sync state operations; the only module (with ratelimit) that talks to Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._prelude = client.register_script(_PRELUDE)
        self._stage = client.register_script(_STAGE)
        self._commit = client.register_script(_COMMIT)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._arm = client.register_script(_ARM)
        self._letter = client.register_script(_LETTER)
        self._claim = client.register_script(_CLAIM_DUE)
        self._forget = client.register_script(_FORGET)
        self._sweep_inbox = client.register_script(_SWEEP_INBOX)

    # ---- dedupe ---------------------------------------------------------------------------
    def seen(self, fp: str) -> bool:
        return bool(self.redis.exists(seen_key(fp)))

    def mark_seen(self, fp: str, ttl: int) -> None:
        self.redis.set(seen_key(fp), "1", ex=ttl)

    def prelude(
        self, fp: str, record_key: str, ts_ms: int, changes: Mapping[str, str | None] | None
    ) -> tuple[bool, int | None, str | None, dict[str, tuple[str | None, int]]]:
        """(seen, deleted-at, linked LeadLex id, merged snapshot) in one round trip.

        `changes` None: no merge (events without values); the snapshot is then empty."""
        source, _account, object_id = record_key.split(":", 2)
        argv: list[Any] = [
            record_key,
            link_field(source, "", object_id),
            "1" if changes is not None else "0",
            ts_ms,
        ]
        for name, value in (changes or {}).items():
            argv += [name, json.dumps(value)]
        keys = [seen_key(fp), GONE, LINKS, snap_key(record_key)]
        reply = self._prelude(keys=keys, args=argv)
        if int(reply[0]) == 1:
            return True, None, None, {}
        gone = int(reply[1]) if reply[1] else None
        link = _s(reply[2]) if reply[2] else None
        snap: dict[str, tuple[str | None, int]] = {}
        for i in range(3, len(reply), 2):
            value, ts = json.loads(reply[i + 1])
            snap[_s(reply[i])] = (value, int(ts))
        return False, gone, link, snap

    # ---- snapshots ------------------------------------------------------------------------
    def snapshot(self, record_key: str) -> dict[str, tuple[str | None, int]]:
        raw = self.redis.hgetall(snap_key(record_key))
        return {_s(k): (json.loads(v)[0], int(json.loads(v)[1])) for k, v in raw.items()}

    # ---- links ----------------------------------------------------------------------------
    def resolve_link(self, source: str, account: str, object_id: str) -> str | None:
        """The LeadLex id linked to a record: exact account first, then an any-account link."""
        exact, anyacct = self.redis.hmget(
            LINKS, [link_field(source, account, object_id), link_field(source, "", object_id)]
        )
        found = exact or anyacct
        return _s(found) if found else None

    def set_links(self, rows: Iterable[tuple[str, str, str, str]]) -> int:
        """Store (source, account, object_id, leadlex_id) rows; returns how many were written."""
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for source, account, object_id, leadlex_id in rows:
            field = link_field(source, account, object_id)
            pipe.hset(LINKS, field, leadlex_id)
            pipe.sadd(rlinks_key(leadlex_id), field)
            n += 1
            if n % 1000 == 0:
                pipe.execute()
        pipe.execute()
        return n

    def remove_links_for_record(self, source: str, account: str, object_id: str) -> list[str]:
        """Drop the record's links (exact and any-account); returns the LeadLex ids unlinked."""
        fields = [link_field(source, account, object_id), link_field(source, "", object_id)]
        ids = self.redis.hmget(LINKS, fields)
        pipe = self.redis.pipeline()
        removed = []
        for field, contact in zip(fields, ids, strict=True):
            if contact:
                pipe.hdel(LINKS, field)
                pipe.srem(rlinks_key(_s(contact)), field)
                removed.append(_s(contact))
        pipe.execute()
        return removed

    def remove_links_to(self, contact: str) -> list[str]:
        """Drop every link pointing at a LeadLex id (it no longer exists); returns the fields."""
        fields = [_s(f) for f in self.redis.smembers(rlinks_key(contact))]
        pipe = self.redis.pipeline()
        for field in fields:
            pipe.hdel(LINKS, field)
        pipe.delete(rlinks_key(contact))
        pipe.execute()
        return fields

    def iter_links(self) -> Iterable[tuple[str, str, str, str]]:
        for field, contact in self.redis.hscan_iter(LINKS, count=1000):
            source, account, object_id = _s(field).split(":", 2)
            yield source, account, object_id, _s(contact)

    def count_links(self) -> int:
        return int(self.redis.hlen(LINKS))

    # ---- deleted records --------------------------------------------------------------------
    def mark_gone(self, record_key: str, ts_ms: int) -> None:
        self.redis.hset(GONE, record_key, ts_ms)

    def gone_since(self, record_key: str) -> int | None:
        raw = self.redis.hget(GONE, record_key)
        return int(raw) if raw is not None else None

    def unmark_gone(self, record_key: str) -> None:
        self.redis.hdel(GONE, record_key)

    # ---- unlinked parking -----------------------------------------------------------------
    def park_unlinked(self, source: str, object_id: str, fp: str, event: dict[str, Any]) -> None:
        self.redis.hset(unlinked_key(source, object_id), fp, json.dumps(event))

    def take_unlinked(self, source: str, object_id: str) -> list[dict[str, Any]]:
        """Parked events of a record (left in place: ingest removes each when it stages it)."""
        raw = self.redis.hvals(unlinked_key(source, object_id))
        return [json.loads(v) for v in raw]

    def unpark(self, source: str, object_id: str, fp: str, *, pipe: Any = None) -> None:
        (pipe if pipe is not None else self.redis).hdel(unlinked_key(source, object_id), fp)

    def count_unlinked(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=f"{P}unlinked:*", count=1000))

    # ---- inbox (what the receiver acknowledged) ---------------------------------------------
    def sweep_inbox(self, cutoff: float, now: float, limit: int) -> list[dict[str, Any]]:
        """Events acknowledged before `cutoff` and still not taken in (their time moves to
        `now`, so each is returned again only after another grace period); forgets the rest."""
        rows = self._sweep_inbox(
            keys=[INBOX, INBOX_AT], args=[f"{cutoff:.3f}", f"{now:.3f}", limit, P]
        )
        return [json.loads(r) for r in rows]

    def inbox_done(self, fps: Iterable[str]) -> None:
        """Forget inbox entries taken in another way (e.g. dead-lettered by ingest)."""
        fps = [fp for fp in fps if fp]
        if fps:
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(INBOX, *fps)
            pipe.zrem(INBOX_AT, *fps)
            pipe.execute()

    def count_inbox(self) -> int:
        return int(self.redis.zcard(INBOX_AT))

    # ---- staging --------------------------------------------------------------------------
    def stage(
        self,
        contact: str,
        fields: Iterable[tuple[str, str, int, dict[str, Any]]],
        *,
        due_at: float,
        fp: str | None,
        seen_ttl: int,
        unpark: tuple[str, str] = ("", ""),
        lease_seconds: float = 60.0,
        counters: tuple[str, str, str] = ("", "", ""),
        extra_stale: int = 0,
    ) -> tuple[bool, int, int]:
        """Stage (field, value, ts_ms, origin) for `contact` atomically, and in the same step
        mark `fp` seen, drop it from the record's parked events (`unpark` = (source,
        object_id)), lease the contact if it became due, and count staged / stale /
        coalesced in the shared metrics (`counters` = their metric field names).

        Returns (newly_due, staged, stale)."""
        argv: list[Any] = [
            f"{due_at:.3f}",
            seen_ttl,
            fp or "",
            max(1, int(lease_seconds * 1000)),
            *counters,
            extra_stale,
        ]
        for field, value, ts, origin in fields:
            argv += [field, value, ts, json.dumps(origin, separators=(",", ":"))]
        keys = [
            stage_key(contact),
            applied_key(contact),
            DUE,
            seen_key(fp) if fp else "",
            unlinked_key(*unpark) if unpark[0] else f"{P}unlinked:none",
            COUNTERS_KEY,
            lease_key(contact),
        ]
        added, staged, stale = self._stage(keys=keys, args=argv)
        return bool(added), int(staged), int(stale)

    def read_stage(self, contact: str) -> list[Staged]:
        out = []
        for field, raw in self.redis.hgetall(stage_key(contact)).items():
            value, ts, origin = json.loads(raw)
            out.append(Staged(_s(field), value, int(ts), origin or {}, _s(raw)))
        return out

    def applied(self, contact: str) -> dict[str, Any]:
        """Applied values: field -> (value, ts_ms); `_updated` -> LeadLex updated_date string."""
        out: dict[str, Any] = {}
        for field, raw in self.redis.hgetall(applied_key(contact)).items():
            name = _s(field)
            out[name] = _s(raw) if name == "_updated" else tuple(json.loads(raw))
        return out

    def forget_applied(self, contact: str, fields: Iterable[str]) -> None:
        """A PATCH of unknown outcome was given up: what LeadLex holds for `fields`, and its
        updated_date, are no longer known (the next flush sends them, the next notes append
        reads updated_date first)."""
        self._forget(keys=[applied_key(contact)], args=list(fields))

    def notes_appended(self, contact: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.redis.hgetall(notes_key(contact)).items()}

    def commit(
        self,
        contact: str,
        items: Iterable[tuple[Staged, str]],
        *,
        token: int,
        intent_key: str = "",
        updated_date: str = "",
        next_due: float | None = None,
        letters: Iterable[Letter] = (),
        forget: Iterable[str] = (),
        reset_attempts: bool = True,
    ) -> int | None:
        """Record a flush's outcome in one fenced step; None when refused (fenced off).

        `items` are (staged, kind) with kind 'f' (field sent or already equal), 'n' (notes
        text covered) or 'd' (drop without recording, e.g. dead-lettered). `intent_key`
        names the write whose outcome this is: the intent is removed with the commit, and
        the commit is accepted while the intent carries that key even from a token that is
        no longer current. `letters` are dead letters added in the same step; `forget` are
        fields whose applied value (and updated_date) become unknown; `reset_attempts`
        False keeps the failure count (a failed attempt resolved). Returns how many
        staged fields remain (0 = the contact left the due set)."""
        argv: list[Any] = [
            contact,
            updated_date,
            f"{(next_due or time.time()):.3f}",
            str(token),
            intent_key,
            json.dumps([letter.to_lua() for letter in letters]),
            json.dumps(list(forget)),
            "1" if reset_attempts else "0",
        ]
        for staged, kind in items:
            argv += [staged.field, staged.raw, kind]
        keys = [
            stage_key(contact),
            applied_key(contact),
            DUE,
            intent_key_of(contact),
            notes_key(contact),
            attempts_key(contact),
            fence_key(contact),
            DLQ_STREAM,
            COUNTERS_KEY,
        ]
        left = int(self._commit(keys=keys, args=argv))
        return None if left < 0 else left

    def add_letter(self, letter: Letter) -> bool:
        """Add one dead letter outside a flush's commit (honouring `once`); False if skipped."""
        return bool(
            self._letter(keys=[DLQ_STREAM, COUNTERS_KEY], args=[json.dumps(letter.to_lua())])
        )

    # ---- in-flight intent (notes exactly once or surfaced) -----------------------------------
    def read_intent(self, contact: str) -> dict[str, Any] | None:
        raw = self.redis.get(intent_key_of(contact))
        return json.loads(raw) if raw else None

    # ---- the fenced flush lease ---------------------------------------------------------------
    def acquire(self, contact: str, ttl: float) -> int | None:
        """Take the contact's flush lease; returns a token larger than any before, or None."""
        token = self._acquire(
            keys=[lock_key(contact), fence_key(contact)], args=[max(1, int(ttl * 1000))]
        )
        return int(token) if token else None

    def release(self, contact: str, token: int) -> None:
        self._release(keys=[lock_key(contact), fence_key(contact)], args=[str(token)])

    def holds(self, contact: str, token: int) -> bool:
        """Whether `token` is still the newest one (no flush has taken over since)."""
        return _s(self.redis.get(fence_key(contact)) or b"") == str(token)

    def arm(self, contact: str, token: int, intent: dict[str, Any], ttl: float) -> bool:
        """Right before a write: check the lease is still ours, extend it by `ttl` and store
        the intent, in one step. False when a newer flush holds the contact."""
        ok = self._arm(
            keys=[lock_key(contact), fence_key(contact), intent_key_of(contact)],
            args=[str(token), max(1, int(ttl * 1000)), json.dumps(intent)],
        )
        return bool(ok)

    # ---- create at most once ---------------------------------------------------------------
    def create_claim(self, record_key: str) -> dict[str, str]:
        """The record's create claim: state pending|done|uncertain, key, sent_at, email, id."""
        raw = self.redis.hgetall(create_key(record_key))
        return {_s(k): _s(v) for k, v in raw.items()}

    def take_create_lease(self, record_key: str, owner: str, ttl: float) -> bool:
        """Become the one worker that may POST (or settle) the record's creation for `ttl`."""
        key = create_lease_key(record_key)
        return bool(self.redis.set(key, owner, nx=True, px=max(1, int(ttl * 1000))))

    def release_create_lease(self, record_key: str, owner: str) -> None:
        self._release(keys=[create_lease_key(record_key), "lls:none"], args=[owner])

    def start_create(
        self, record_key: str, key: str, sent_at: float, email: str, settle_at: float
    ) -> None:
        """Claim the record's creation before the POST: a lost answer is settled at
        `settle_at` (see `due_creates`), never answered by a second POST with a new key."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            create_key(record_key),
            mapping={"state": "pending", "key": key, "sent_at": f"{sent_at:.3f}", "email": email},
        )
        pipe.zadd(CREATE_DUE, {record_key: settle_at})
        pipe.execute()

    def finish_create(self, record_key: str, contact: str, ttl: int) -> None:
        """The record's contact exists in LeadLex: remember it (for `ttl` s) and stop settling."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(create_key(record_key), mapping={"state": "done", "id": contact})
        pipe.expire(create_key(record_key), ttl)
        pipe.zrem(CREATE_DUE, record_key)
        pipe.execute()

    def set_create_state(self, record_key: str, state: str, settle_at: float | None) -> None:
        """Change a claim's state; `settle_at` None takes it off the settle schedule."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(create_key(record_key), "state", state)
        if settle_at is None:
            pipe.zrem(CREATE_DUE, record_key)
        else:
            pipe.zadd(CREATE_DUE, {record_key: settle_at})
        pipe.execute()

    def drop_create(self, record_key: str) -> None:
        """The POST certainly did not create anything: forget the claim."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(create_key(record_key))
        pipe.zrem(CREATE_DUE, record_key)
        pipe.execute()

    def due_creates(self, now: float, limit: int) -> list[str]:
        """Records whose create answer was lost and may be settled now."""
        rows = self.redis.zrangebyscore(CREATE_DUE, "-inf", f"{now:.3f}", start=0, num=limit)
        return [_s(r) for r in rows]

    # ---- scheduling -----------------------------------------------------------------------
    def lease(self, contact: str, seconds: float) -> None:
        self.redis.set(lease_key(contact), "1", px=max(1, int(seconds * 1000)))

    def claim_due(self, now: float, lease_seconds: float, limit: int) -> list[str]:
        rows = self._claim(keys=[DUE], args=[f"{now:.3f}", lease_seconds, limit, P])
        return [_s(r) for r in rows]

    def due_count(self) -> int:
        return int(self.redis.zcard(DUE))

    def oldest_due(self) -> float | None:
        rows = self.redis.zrange(DUE, 0, 0, withscores=True)
        return float(rows[0][1]) if rows else None

    def attempts(self, contact: str) -> tuple[int, float]:
        raw = self.redis.hmget(attempts_key(contact), ["n", "first"])
        return int(raw[0] or 0), float(raw[1] or 0)

    def record_failure(self, contact: str, now: float) -> tuple[int, float]:
        pipe = self.redis.pipeline()
        pipe.hincrby(attempts_key(contact), "n", 1)
        pipe.hsetnx(attempts_key(contact), "first", f"{now:.3f}")
        pipe.hget(attempts_key(contact), "first")
        n, _, first = pipe.execute()
        return int(n), float(first)


def inbox_add(pipe: Any, events: Iterable[tuple[str, str]], now: float) -> None:
    """Record acknowledged events, (fingerprint, event JSON), on the receiver's pipeline."""
    for fp, raw in events:
        pipe.hset(INBOX, fp, raw)
        pipe.zadd(INBOX_AT, {fp: now}, nx=True)
