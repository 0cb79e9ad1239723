"""Sync state in Redis: dedupe ledger, record snapshots, links, staged changes, commits.

Every multi-key change is one Lua script, so several workers on several machines
can run at once and a worker killed at any line leaves a state the next attempt
can finish from. Key layout (all under `lls:`):

- `lls:seen:{fingerprint}` (string): dedupe ledger, TTL `DEDUPE_TTL_SECONDS` (7 days).
- `lls:snap:{src}:{acct}:{id}` (hash): a record's last known CRM values, field ->
  [value, ts_ms(, seq)]: seq (ChangeEvent.seq, order within ts_ms) as 20-digit text, only
  when not zero (see _SEQ).
- `lls:links` (hash): `{src}:{acct}:{id}` -> LeadLex id (`acct` empty = any account);
  `lls:rlinks:{leadlex_id}` (set) is the reverse index. A CRM deletion keeps the link (the
  record's lifecycle says it is inactive), so a restore resumes syncing.
- `lls:life` (hash): `{src}:{acct}:{id}` -> `{state}:{ts_ms}`, the record's newest
  lifecycle event by CRM time: `deleted`, `active` (restored), `merged` (into another
  record) or `erased` (privacy deletion, final). A lifecycle event older than (or, for a
  restore, as old as) the stored one does nothing. `lls:gone` (hash, record -> deletion
  time) is the older form of `deleted`, still read.
- `lls:unlinked:{src}:{id}` (hash): parked events of a record, fingerprint -> event: no
  link yet, or dated before the record's deletion (replayed by a restore).
- `lls:resolve:retry` (zset): `{src}:{id}` -> when to try again the contact lookup of a
  record whose events are parked because the lookup could not run (no budget, circuit
  open, LeadLex error); the pump's `retry_unresolved` replays them.
- `lls:stage:{leadlex_id}` (hash): staged LeadLex field -> [value, ts_ms, origin(, seq)].
- `lls:applied:{leadlex_id}` (hash): last value applied per field -> [value, ts_ms(, seq)]
  (value null: unknown since a PATCH of unknown outcome, so it is sent again); a composed
  value (full_name) also keeps its CRM record: [value, ts_ms, seq or '', record];
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

import functools
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.metrics import COUNTERS_KEY, Metrics

P = "lls:"
DUE = f"{P}due"
LINKS = f"{P}links"
INBOX = f"{P}inbox"
INBOX_AT = f"{P}inbox:at"
GONE = f"{P}gone"
LIFE = f"{P}life"
RESOLVE_RETRY = f"{P}resolve:retry"
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


SEQ_MAX = 10**20 - 1  # a within-time sequence is stored as 20 digits (see _SEQ)


def seq_text(seq: int) -> str:
    """The stored form of a within-time sequence: 20 digits, '' for 0 (not stored)."""
    return f"{min(seq, SEQ_MAX):020d}" if seq > 0 else ""


def seq_at(entry: list[Any], index: int) -> int:
    """The sequence stored at `index` of a snapshot / stage / applied entry (absent: 0)."""
    return int(entry[index]) if len(entry) > index and entry[index] else 0


# The tie rule shared by the prelude and staging: on equal CRM times the greater value wins,
# compared bytewise on UTF-8 (not with the server's locale); a null (cleared or unknown)
# value is below any text. It does not depend on arrival order, so replicas converge.
_GT = """
local function gt(a, b)
  if a == b or type(a) ~= 'string' then return false end
  if type(b) ~= 'string' then return true end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
"""

# Order within one CRM time (ChangeEvent.seq, e.g. CDC's commit and sequence numbers): a
# 20-digit zero-padded text (exact, whatever its size; cjson keeps only 14 digits of a
# number), stored only when not zero, so entries without one read as sequence 0. cmp
# orders (ts, seq) pairs: 1 when a is later, -1 when earlier, 0 when equal; only then does
# the value tie rule (_GT) apply.
_SEQ = """
local Q0 = '00000000000000000000'
local function q_of(x)
  if type(x) == 'string' and #x == 20 then return x end
  return Q0
end
local function cmp(ats, aq, bts, bq)
  if ats ~= bts then
    if ats > bts then return 1 end
    return -1
  end
  if aq == bq then return 0 end
  if gt(aq, bq) then return 1 end
  return -1
end
local function with_q(t, q)
  if q ~= Q0 then t[#t + 1] = q end
  return t
end
"""

# A record's lifecycle entry `state:ts` (see the module docstring), with the legacy
# deletion mark as fallback. Returns state, ts (number) and the raw entry, or nil.
_LIFE_OF = """
local function life_of(life_key, gone_key, record)
  local raw = redis.call('HGET', life_key, record)
  if not raw then
    local g = redis.call('HGET', gone_key, record)
    if not g then return nil, nil, nil end
    raw = 'deleted:' .. g
  end
  local state, ts = string.match(raw, '^(%a+):(%-?%d+)$')
  return state, tonumber(ts), raw
end
"""

# Steps run for a whole batch in one call (`_BATCH`): ARGV[1] is a JSON list of
# [keys, argv] pairs (strings), each handled by the step's function `step(KEYS, ARGV)` in
# order, exactly as one call of its own would be (a step sees what the ones before it
# wrote); the reply is the JSON list of the steps' replies. One script call for a batch
# instead of one per event: no per-call argument tables, one reply to parse.
_BATCH = """
local out = {}
for i, call in ipairs(cjson.decode(ARGV[1])) do out[i] = step(call[1], call[2]) end
return cjson.encode(out)
"""

# The first step of ingest: dedupe check, lifecycle, link, and (for events with values)
# the snapshot merge, per event (batched by _BATCH). KEYS: seen, life, links, snapshot,
# gone (legacy). ARGV: record field, any-account field, merge (0/1), ts_ms, whole record
# (0/1), seq (_SEQ text), then field, value-json pairs. Returns {1} when seen, else {0,
# life entry or false, link or false, snapshot...}. Nothing is merged while the record is
# erased, or deleted / merged at or after ts. A field takes the event's value when it is
# newer by (time, seq), or as new and greater (the tie rule); for a whole-record event a
# value equal to the known one keeps its time.
_PRELUDE = (
    _GT
    + _SEQ
    + _LIFE_OF
    + """
local function step(KEYS, ARGV)
if redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
local state, lts, life = life_of(KEYS[2], KEYS[5], ARGV[1])
local link = redis.call('HGET', KEYS[3], ARGV[1])
if not link then link = redis.call('HGET', KEYS[3], ARGV[2]) end
local ts = tonumber(ARGV[4])
local open = (not state) or (state ~= 'erased' and (state == 'active' or lts < ts))
if ARGV[3] == '1' and open then
  local whole = ARGV[5] == '1'
  local q = q_of(ARGV[6])
  for i = 7, #ARGV, 2 do
    local v = cjson.decode(ARGV[i + 1])
    local cur = redis.call('HGET', KEYS[4], ARGV[i])
    local take = true
    if cur then
      local c = cjson.decode(cur)
      local order = cmp(tonumber(c[2]), q_of(c[3]), ts, q)
      if whole and c[1] == v then take = false
      elseif order > 0 then take = false
      elseif order == 0 then take = gt(v, c[1]) end
    end
    if take then redis.call('HSET', KEYS[4], ARGV[i], cjson.encode(with_q({v, ts}, q))) end
  end
end
local out = {0, life or false, link or false}
if ARGV[3] == '1' then
  local snap = redis.call('HGETALL', KEYS[4])
  for i = 1, #snap do out[#out + 1] = snap[i] end
end
return out
end
"""
    + _BATCH
)

# Stage LeadLex field values for a contact, never older than what was applied or staged;
# in the same step mark the event seen, unpark it, lease a newly due contact and count
# (per contact and event; batched by _BATCH).
# KEYS: stage, applied, due, seen ('' = none), unlinked, counters, lease
# ARGV: due_at, seen_ttl, fp, lease_ms, staged-counter, stale-counter, coalesced-counter
#       ('' = not counted), extra stale, then field, value, ts, origin, seq (5 per field).
# Returns {newly_due (0/1), staged count, stale count}. Values are ordered by (CRM time,
# seq); equal pairs follow the tie rule (_GT) against both applied and staged values,
# counted in `field_time_ties`; except for a restage without an event (seen = '': the
# flush re-mapping staged values from their record's snapshot), which replaces values as
# new as itself, as before ties had a rule, and except for a composed value (origin `p`,
# e.g. full_name from first + last name) against a composition of the same record (origin
# `r`; applied entries keep it, see _COMMIT): two compositions of one record and time are
# not two writes but one made from a snapshot that lacked a part (the first name's event
# arriving after the last name's, maybe after a flush), so the later one is staged and
# the flush's re-mapping from the record's snapshot decides what is sent.
_STAGE = (
    _GT
    + _SEQ
    + """
local function step(KEYS, ARGV)
local staged, stale, ties = 0, 0, 0
local ruled = KEYS[4] ~= ''
for i = 9, #ARGV, 5 do
  local f, v, ts, origin = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local q = q_of(ARGV[i + 4])
  local o = cjson.decode(origin)
  local parts_of = false  -- the record whose parts this value was composed from
  if type(o) == 'table' and o['p'] and type(o['r']) == 'string' then parts_of = o['r'] end
  local newer, tie = true, false
  local a = redis.call('HGET', KEYS[2], f)
  if a then
    local d = cjson.decode(a)
    local order = cmp(tonumber(d[2]), q_of(d[3]), ts, q)
    if order > 0 then newer = false
    elseif ruled and order == 0 and type(d[1]) == 'string' and d[1] ~= v
      and not (parts_of and d[4] == parts_of) then
      tie, newer = true, gt(v, d[1])
    end
  end
  local s = redis.call('HGET', KEYS[1], f)
  if newer and s then
    local d = cjson.decode(s)
    local order = cmp(tonumber(d[2]), q_of(d[4]), ts, q)
    local same = parts_of and type(d[3]) == 'table' and d[3]['p'] and d[3]['r'] == parts_of
    if order > 0 then newer = false
    elseif ruled and order == 0 and d[1] ~= v and not same then
      tie, newer = true, gt(v, d[1])
    end
  end
  if tie then ties = ties + 1 end
  if newer then
    redis.call('HSET', KEYS[1], f, cjson.encode(with_q({v, ts, o}, q)))
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
if ties > 0 then redis.call('HINCRBY', KEYS[6], '__TIES__', ties) end
return {added, staged, stale}
end
""".replace("__TIES__", Metrics.field("field_time_ties"))
    + _BATCH
)

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
# Applied values are ordered by (CRM time, seq) like staging; the seq is kept when a value
# becomes unknown. A composed value (origin `p`) is recorded with its record,
# [value, ts, seq or '', record], for staging's same-record rule.
_COMMIT = (
    _GT
    + _SEQ
    + """
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
    local q = q_of(st[4])
    local d = a and cjson.decode(a)
    if (not d) or cmp(tonumber(d[2]), q_of(d[3]), tonumber(st[2]), q) <= 0 then
      local e = with_q({st[1], st[2]}, q)
      local o = st[3]
      if type(o) == 'table' and o['p'] and type(o['r']) == 'string' then
        e[3], e[4] = e[3] or '', o['r']
      end
      redis.call('HSET', KEYS[2], f, cjson.encode(e))
    end
  elseif kind == 'n' then
    redis.call('HSET', KEYS[5], string.sub(f, 7), st[1])
  end
  if redis.call('HGET', KEYS[1], f) == raw then redis.call('HDEL', KEYS[1], f) end
end
for _, f in ipairs(cjson.decode(ARGV[7])) do
  local a = redis.call('HGET', KEYS[2], f)
  if a then
    local d = cjson.decode(a)
    redis.call('HSET', KEYS[2], f, cjson.encode(with_q({cjson.null, d[2]}, q_of(d[3]))))
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
)

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
_FORGET = (
    _GT
    + _SEQ
    + """
for i = 1, #ARGV do
  local a = redis.call('HGET', KEYS[1], ARGV[i])
  if a then
    local d = cjson.decode(a)
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(with_q({cjson.null, d[2]}, q_of(d[3]))))
  end
end
redis.call('HDEL', KEYS[1], '_updated')
return 1
"""
)

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


# ---- record lifecycle, links and parking (ordered by CRM time per record) -------------------
# Delete, restore or privacy-delete one record, unless its lifecycle already holds a newer
# event; mark the event seen in the same step. KEYS: life, seen, links, snapshot, parked
# events, gone (legacy)   ARGV: record field, any-account field, kind, ts_ms, seen_ttl, prefix
# Returns {outcome, previous entry or false}: outcome 'duplicate', 'final' (erased before),
# 'stale' (a newer lifecycle event, or one as new: a deletion wins a tie with a restore) or
# 'applied'. A privacy deletion is final: it drops the links, the snapshot, the parked
# events, the record's staged values and remembered notes text (the personal data we hold),
# and no later event of the record is synced.
_LIFECYCLE = (
    _LIFE_OF
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'duplicate', false} end
local state, lts, raw = life_of(KEYS[1], KEYS[6], ARGV[1])
local kind, ts = ARGV[3], tonumber(ARGV[4])
local outcome = 'applied'
if state == 'erased' then
  outcome = 'final'
elseif kind == 'privacy_delete' then
  local at = ARGV[4]
  if lts and lts > ts then at = string.match(raw, ':(.*)$') end
  redis.call('HSET', KEYS[1], ARGV[1], 'erased:' .. at)
  for _, f in ipairs({ARGV[1], ARGV[2]}) do
    local c = redis.call('HGET', KEYS[3], f)
    if c then
      redis.call('HDEL', KEYS[3], f)
      redis.call('SREM', ARGV[6] .. 'rlinks:' .. c, f)
      -- values of this record not sent yet, and the notes text we remember for it
      local sk = ARGV[6] .. 'stage:' .. c
      local rows = redis.call('HGETALL', sk)
      for j = 1, #rows, 2 do
        local o = cjson.decode(rows[j + 1])[3]
        if type(o) == 'table' and o.r == ARGV[1] then redis.call('HDEL', sk, rows[j]) end
      end
      redis.call('HDEL', ARGV[6] .. 'notes:' .. c, ARGV[1])
    end
  end
  redis.call('DEL', KEYS[4], KEYS[5])
elseif lts and (lts > ts or (lts == ts and (kind == 'restore' or state ~= 'active'))) then
  outcome = 'stale'
else
  local to = 'deleted:'
  if kind == 'restore' then to = 'active:' end
  redis.call('HSET', KEYS[1], ARGV[1], to .. ARGV[4])
end
if outcome ~= 'stale' then redis.call('HDEL', KEYS[6], ARGV[1]) end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
return {outcome, raw or false}
"""
)

# A merge: each merged record not already past ts becomes `merged:ts` and loses its links;
# the survivor inherits the first merged record's LeadLex id when it has no link itself
# (and is not erased). KEYS: life, seen, links, gone (legacy)
# ARGV: prefix, survivor field, survivor any-account field, ts_ms, seen_ttl, then
# (record field, any-account field) per merged record.
# Returns {-1} when seen, else {inherited (0/1), survivor's link or false, then the
# 1-based positions of the records merged now}.
_MERGE = (
    _LIFE_OF
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
local ts = tonumber(ARGV[4])
local target = redis.call('HGET', KEYS[3], ARGV[2]) or redis.call('HGET', KEYS[3], ARGV[3])
local sstate = life_of(KEYS[1], KEYS[4], ARGV[2])
local inherited = 0
local out = {}
for i = 6, #ARGV, 2 do
  local rec, anyf = ARGV[i], ARGV[i + 1]
  local state, lts = life_of(KEYS[1], KEYS[4], rec)
  if state ~= 'erased' and not (lts and lts >= ts) then
    redis.call('HSET', KEYS[1], rec, 'merged:' .. ARGV[4])
    redis.call('HDEL', KEYS[4], rec)
    for _, f in ipairs({rec, anyf}) do
      local c = redis.call('HGET', KEYS[3], f)
      if c then
        if (not target) and sstate ~= 'erased' then
          redis.call('HSET', KEYS[3], ARGV[2], c)
          redis.call('SADD', ARGV[1] .. 'rlinks:' .. c, ARGV[2])
          target, inherited = c, 1
        end
        redis.call('HDEL', KEYS[3], f)
        redis.call('SREM', ARGV[1] .. 'rlinks:' .. c, f)
      end
    end
    table.insert(out, (i - 4) / 2)
  end
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
return {inherited, target or false, unpack(out)}
"""
)

# Park an event of a record. KEYS: parked events, links, resolve retry, life, gone (legacy)
# ARGV: fp, event json, record field, any-account field, retry member, retry_at ('' = no
# retry: the lookup found nothing), mode ('1' unresolved, '2' deleted), ts_ms.
# Unresolved: a link set since the event was resolved is returned instead of parking.
# Deleted: when the record is no longer deleted at or after ts (a restore came in between),
# 'reopened' is returned instead of parking. Setting links, restores and parking are each
# atomic, so no event is parked after what would replay it has run.
_PARK = (
    _LIFE_OF
    + """
if ARGV[7] == '2' then
  local state, lts = life_of(KEYS[4], KEYS[5], ARGV[3])
  if state ~= 'deleted' or lts < tonumber(ARGV[8]) then return 'reopened' end
end
if ARGV[7] == '1' then
  local link = redis.call('HGET', KEYS[2], ARGV[3]) or redis.call('HGET', KEYS[2], ARGV[4])
  if link then return link end
  if ARGV[6] ~= '' then
    redis.call('ZADD', KEYS[3], 'LT', ARGV[6], ARGV[5])
  else
    redis.call('ZREM', KEYS[3], ARGV[5])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
"""
)

# Records whose lookup is due again: lease each until ARGV[2] (a re-park or a link moves
# or removes it; a dead worker's claim comes back). KEYS: resolve retry
# ARGV: now, lease until, n
_CLAIM_RETRY = """
local rows = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(rows) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return rows
"""


@dataclass(frozen=True, slots=True)
class Life:
    """A record's newest lifecycle event: state (deleted, active, merged, erased) and time."""

    state: str
    ts_ms: int

    @classmethod
    def parse(cls, raw: Any) -> Life | None:
        if not raw:
            return None
        state, _, ts = _s(raw).partition(":")
        return cls(state, int(ts))

    def blocks(self, ts_ms: int) -> bool:
        """Whether an event of the record at `ts_ms` must not be synced (yet)."""
        return self.state == "erased" or (self.state != "active" and self.ts_ms >= ts_ms)


# A prelude's result: (seen, lifecycle, link, snapshot field -> (value, ts_ms), field -> seq).
Prelude = tuple[bool, Life | None, str | None, dict[str, tuple[str | None, int]], dict[str, int]]


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
    seq: int = 0  # order within ts_ms (ChangeEvent.seq)

    @classmethod
    def parse(cls, field: str, raw: str) -> Staged:
        """A stored stage entry `[value, ts, origin(, seq)]` (entries before seq had three)."""
        entry = json.loads(raw)
        return cls(field, entry[0], int(entry[1]), entry[2] or {}, raw, seq_at(entry, 3))


class Steps:
    """State steps (Lua scripts and plain commands) sent in ONE round trip, in order.

    Not a transaction: each script is atomic on its own, as when it is called alone, and
    Redis runs them one after the other in the order given, so a step sees what the steps
    before it wrote. Scripts go as EVALSHA without redis-py's per-pipeline SCRIPT EXISTS
    round trip; a script the server does not know (restarted, flushed) is loaded and only
    the steps that failed with NOSCRIPT (which ran nothing) are sent again, in order."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self.pipe = client.pipeline(transaction=False)  # plain commands go here directly
        self._scripts: dict[int, tuple[Any, list[Any], list[Any]]] = {}

    def script(self, script: Any, keys: list[Any], args: list[Any]) -> int:
        """Queue one script call; returns its position in the reply list."""
        index = len(self.pipe.command_stack)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)
        self._scripts[index] = (script, keys, args)
        return index

    def __len__(self) -> int:
        return len(self.pipe.command_stack)

    def execute(self) -> list[Any]:
        if not len(self):
            return []
        replies: list[Any] = self.pipe.execute(raise_on_error=False)
        missing = [
            i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
        ]
        if missing:
            for script in {id(self._scripts[i][0]): self._scripts[i][0] for i in missing}.values():
                script.sha = _s(self.redis.script_load(script.script))
            again = self.redis.pipeline(transaction=False)
            for i in missing:
                script, keys, args = self._scripts[i]
                again.evalsha(script.sha, len(keys), *keys, *args)
            for i, reply in zip(missing, again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies


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
        self._lifecycle = client.register_script(_LIFECYCLE)
        self._merge = client.register_script(_MERGE)
        self._park = client.register_script(_PARK)
        self._claim_retry = client.register_script(_CLAIM_RETRY)

    # ---- dedupe ---------------------------------------------------------------------------
    def seen(self, fp: str) -> bool:
        return bool(self.redis.exists(seen_key(fp)))

    def mark_seen(self, fp: str, ttl: int, *, pipe: Any = None) -> None:
        (pipe if pipe is not None else self.redis).set(seen_key(fp), "1", ex=ttl)

    def prelude(
        self,
        fp: str,
        record_key: str,
        ts_ms: int,
        changes: Mapping[str, str | None] | None,
        *,
        whole_record: bool = False,
    ) -> tuple[bool, Life | None, str | None, dict[str, tuple[str | None, int]]]:
        """(seen, lifecycle, linked LeadLex id, merged snapshot) in one round trip.

        `changes` None: no merge (events without values); the snapshot is then empty.
        `whole_record`: the event carries every field with the record's time; a field whose
        value did not change keeps its earlier time."""
        seen, life, link, snap, _seqs = self.prelude_seq(
            fp, record_key, ts_ms, changes, whole_record=whole_record
        )
        return seen, life, link, snap

    def prelude_seq(
        self,
        fp: str,
        record_key: str,
        ts_ms: int,
        changes: Mapping[str, str | None] | None,
        *,
        whole_record: bool = False,
        seq: int = 0,
    ) -> Prelude:
        """`prelude` for an event ordered by (ts_ms, seq); also returns each snapshot field's
        sequence (fields without one are absent: 0)."""
        steps = Steps(self.redis)
        call = self.prelude_call(fp, record_key, ts_ms, changes, whole_record=whole_record, seq=seq)
        at = self.preludes_on(steps, [call])
        return self.prelude_replies(steps.execute()[at])[0]

    def prelude_call(
        self,
        fp: str,
        record_key: str,
        ts_ms: int,
        changes: Mapping[str, str | None] | None,
        *,
        whole_record: bool = False,
        seq: int = 0,
    ) -> list[Any]:
        """One event's prelude (arguments as for `prelude_seq`), for `preludes_on`."""
        source, _account, object_id = record_key.split(":", 2)
        argv: list[str] = [
            record_key,
            link_field(source, "", object_id),
            "1" if changes is not None else "0",
            str(ts_ms),
            "1" if whole_record else "0",
            seq_text(seq),
        ]
        for name, value in (changes or {}).items():
            argv += [name, json.dumps(value)]
        return [[seen_key(fp), LIFE, LINKS, snap_key(record_key), GONE], argv]

    def preludes_on(self, steps: Steps, calls: list[list[Any]]) -> int:
        """Queue the preludes of several events on `steps` as ONE script call, run in order
        (each sees the merges of those before it); returns the reply's position, which
        `prelude_replies` turns into one `prelude_seq` result per call."""
        return steps.script(self._prelude, [], [json.dumps(calls, separators=(",", ":"))])

    @staticmethod
    def prelude_replies(reply: Any) -> list[Prelude]:
        """Parse the reply of `preludes_on`: (seen, lifecycle, link, snapshot, seqs) each."""
        out: list[Prelude] = []
        for one in json.loads(reply):
            if int(one[0]) == 1:
                out.append((True, None, None, {}, {}))
                continue
            snap, seqs = _snapshot_of((one[i], one[i + 1]) for i in range(3, len(one), 2))
            out.append((False, Life.parse(one[1]), one[2] or None, snap, seqs))
        return out

    # ---- snapshots ------------------------------------------------------------------------
    def snapshot(self, record_key: str) -> dict[str, tuple[str | None, int]]:
        return self.snapshot_seq(record_key)[0]

    def snapshot_seq(
        self, record_key: str
    ) -> tuple[dict[str, tuple[str | None, int]], dict[str, int]]:
        """The record's snapshot (field -> (value, ts_ms)) and its fields' non-zero seqs."""
        raw = self.redis.hgetall(snap_key(record_key))
        return _snapshot_of((_s(k), v) for k, v in raw.items())

    # ---- links ----------------------------------------------------------------------------
    def resolve_link(self, source: str, account: str, object_id: str) -> str | None:
        """The LeadLex id linked to a record: exact account first, then an any-account link."""
        exact, anyacct = self.redis.hmget(
            LINKS, [link_field(source, account, object_id), link_field(source, "", object_id)]
        )
        found = exact or anyacct
        return _s(found) if found else None

    def set_links(self, rows: Iterable[tuple[str, str, str, str]]) -> int:
        """Store (source, account, object_id, leadlex_id) rows; returns how many were written.

        Parked events are not replayed here: use `worker.pipeline.link_records`."""
        return self._store_links(rows)[0]

    def link(self, rows: Iterable[tuple[str, str, str, str]]) -> list[tuple[str, str]]:
        """Store links and, atomically with each, end the record's lookup retries and see
        whether it has parked events; returns those records as (source, object_id)."""
        return self._store_links(rows)[1]

    def _store_links(
        self, rows: Iterable[tuple[str, str, str, str]]
    ) -> tuple[int, list[tuple[str, str]]]:
        n = 0
        parked: dict[tuple[str, str], None] = {}
        chunk: list[tuple[str, str, str, str]] = []

        def store() -> None:
            pipe = self.redis.pipeline(transaction=True)
            for source, account, object_id, leadlex_id in chunk:
                field = link_field(source, account, object_id)
                pipe.hset(LINKS, field, leadlex_id)
                pipe.sadd(rlinks_key(leadlex_id), field)
                pipe.zrem(RESOLVE_RETRY, f"{source}:{object_id}")
                pipe.exists(unlinked_key(source, object_id))
            replies = pipe.execute()
            for j, (source, _account, object_id, _id) in enumerate(chunk):
                if replies[j * 4 + 3]:
                    parked[(source, object_id)] = None
            chunk.clear()

        for row in rows:
            chunk.append(row)
            n += 1
            if len(chunk) == 1000:
                store()
        if chunk:
            store()
        return n, list(parked)

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

    # ---- record lifecycle ---------------------------------------------------------------
    def lifecycle(
        self, fp: str, record_key: str, kind: str, ts_ms: int, seen_ttl: int
    ) -> tuple[str, Life | None]:
        """Apply a delete / restore / privacy_delete of a record in CRM-time order and mark
        the event seen (one Lua step). Returns (outcome, the lifecycle before): outcome
        'duplicate', 'final' (the record was erased), 'stale' (a newer lifecycle event is
        known) or 'applied'."""
        source, _account, object_id = record_key.split(":", 2)
        keys = [LIFE, seen_key(fp), LINKS, snap_key(record_key), unlinked_key(source, object_id)]
        argv = [record_key, link_field(source, "", object_id), kind, ts_ms, seen_ttl, P]
        outcome, before = self._lifecycle(keys=[*keys, GONE], args=argv)
        return _s(outcome), Life.parse(before)

    def merge(
        self,
        fp: str,
        survivor: tuple[str, str, str],
        merged: Iterable[str],
        ts_ms: int,
        seen_ttl: int,
    ) -> tuple[bool, bool, str | None, list[str]]:
        """Merge records (`merged` object ids) into `survivor` (source, account, object_id)
        in CRM-time order and mark the event seen. Returns (seen before, the survivor
        inherited a link, the survivor's link, the object ids merged now)."""
        source, account, object_id = survivor
        argv: list[Any] = [
            P,
            link_field(source, account, object_id),
            link_field(source, "", object_id),
            ts_ms,
            seen_ttl,
        ]
        others = list(merged)
        for other in others:
            argv += [link_field(source, account, other), link_field(source, "", other)]
        reply = self._merge(keys=[LIFE, seen_key(fp), LINKS, GONE], args=argv)
        if int(reply[0]) == -1:
            return True, False, None, []
        target = _s(reply[1]) if reply[1] else None
        return False, bool(int(reply[0])), target, [others[int(n) - 1] for n in reply[2:]]

    def life(self, record_key: str) -> Life | None:
        raw = self.redis.hget(LIFE, record_key)
        if raw is None:
            gone = self.redis.hget(GONE, record_key)
            return Life("deleted", int(gone)) if gone is not None else None
        return Life.parse(raw)

    def count_deleted(self) -> int:
        """Records deleted (or erased) in the CRM and not restored: their syncing is stopped."""
        n = 0
        for _field, raw in self.redis.hscan_iter(LIFE, count=1000):
            n += _s(raw).startswith(("deleted:", "erased:"))
        return n + int(self.redis.hlen(GONE))

    # ---- parking --------------------------------------------------------------------------
    def park(
        self,
        event: Mapping[str, Any],
        *,
        check_link: bool,
        retry_at: float | None = None,
    ) -> str | None:
        """Park an event of a record (`lls:unlinked:*`).

        `check_link` (the event could not be resolved): a link that appeared meanwhile is
        returned instead of parking, and the record's lookup retry is scheduled at
        `retry_at` (None: the lookup found nothing, no retry). Otherwise (the record is
        deleted): "reopened" is returned instead of parking when a restore came in between.
        Returns None when parked."""
        source, account, object_id = event["source"], event["account"], event["object_id"]
        record = link_field(source, account, object_id)
        keys = [unlinked_key(source, object_id), LINKS, RESOLVE_RETRY, LIFE, GONE]
        argv = [
            event["fingerprint"],
            json.dumps(event),
            record,
            link_field(source, "", object_id),
            f"{source}:{object_id}",
            f"{retry_at:.3f}" if retry_at is not None else "",
            "1" if check_link else "2",
            event["occurred_at_ms"],
        ]
        link = self._park(keys=keys, args=argv)
        return _s(link) if link else None

    def take_unlinked(self, source: str, object_id: str) -> list[dict[str, Any]]:
        """Parked events of a record (left in place: ingest removes each when it stages it)."""
        raw = self.redis.hvals(unlinked_key(source, object_id))
        return [json.loads(v) for v in raw]

    def unpark(self, source: str, object_id: str, fp: str, *, pipe: Any = None) -> None:
        (pipe if pipe is not None else self.redis).hdel(unlinked_key(source, object_id), fp)

    def count_unlinked(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(match=f"{P}unlinked:*", count=1000))

    def claim_resolve_retries(self, now: float, lease_seconds: float, limit: int) -> list[str]:
        """Records (`{source}:{object_id}`) whose lookup is due again, leased for a while."""
        rows = self._claim_retry(
            keys=[RESOLVE_RETRY], args=[f"{now:.3f}", f"{now + lease_seconds:.3f}", limit]
        )
        return [_s(r) for r in rows]

    def has_parked(self, source: str, object_id: str) -> bool:
        return bool(self.redis.exists(unlinked_key(source, object_id)))

    def end_resolve_retry(self, source: str, object_id: str) -> None:
        self.redis.zrem(RESOLVE_RETRY, f"{source}:{object_id}")

    def count_resolve_retries(self) -> int:
        return int(self.redis.zcard(RESOLVE_RETRY))

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
        seqs: Mapping[str, int] | None = None,
    ) -> tuple[bool, int, int]:
        """Stage (field, value, ts_ms, origin) for `contact` atomically, and in the same step
        mark `fp` seen, drop it from the record's parked events (`unpark` = (source,
        object_id)), lease the contact if it became due, and count staged / stale /
        coalesced in the shared metrics (`counters` = their metric field names).
        `seqs` gives a field's order within its ts_ms (absent: 0).

        Returns (newly_due, staged, stale)."""
        call = self.stage_call(
            contact,
            fields,
            due_at=due_at,
            fp=fp,
            seen_ttl=seen_ttl,
            unpark=unpark,
            lease_seconds=lease_seconds,
            counters=counters,
            extra_stale=extra_stale,
            seqs=seqs,
        )
        steps = Steps(self.redis)
        at = self.stages_on(steps, [call])
        return self.stage_replies(steps.execute()[at])[0]

    def stage_call(
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
        seqs: Mapping[str, int] | None = None,
    ) -> list[Any]:
        """One staging step (arguments as for `stage`), for `stages_on`."""
        argv: list[str] = [
            f"{due_at:.3f}",
            str(seen_ttl),
            fp or "",
            str(max(1, int(lease_seconds * 1000))),
            *counters,
            str(extra_stale),
        ]
        origins: dict[int, str] = {}  # the rows of one event share one origin: encode it once
        for field, value, ts, origin in fields:
            seq = seqs.get(field, 0) if seqs else 0
            encoded = origins.get(id(origin))
            if encoded is None:
                encoded = origins[id(origin)] = json.dumps(origin, separators=(",", ":"))
            argv += [field, value, str(ts), encoded, seq_text(seq)]
        keys = [
            stage_key(contact),
            applied_key(contact),
            DUE,
            seen_key(fp) if fp else "",
            unlinked_key(*unpark) if unpark[0] else f"{P}unlinked:none",
            COUNTERS_KEY,
            lease_key(contact),
        ]
        return [keys, argv]

    def stages_on(self, steps: Steps, calls: list[list[Any]]) -> int:
        """Queue several staging steps on `steps` as ONE script call, run in order; returns
        the reply's position, which `stage_replies` turns into one `stage` result each."""
        return steps.script(self._stage, [], [json.dumps(calls, separators=(",", ":"))])

    @staticmethod
    def stage_replies(reply: Any) -> list[tuple[bool, int, int]]:
        """Parse the reply of `stages_on`: (newly_due, staged, stale) per step."""
        return [(bool(a), int(b), int(c)) for a, b, c in json.loads(reply)]

    def read_stage(self, contact: str) -> list[Staged]:
        return [
            Staged.parse(_s(f), _s(raw))
            for f, raw in self.redis.hgetall(stage_key(contact)).items()
        ]

    def applied(self, contact: str) -> dict[str, Any]:
        """Applied values: field -> (value, ts_ms); `_updated` -> LeadLex updated_date string.
        (A non-zero seq, stored as a third element, and a composed value's record, as a
        fourth, are used by the Lua steps only.)"""
        out: dict[str, Any] = {}
        for field, raw in self.redis.hgetall(applied_key(contact)).items():
            name = _s(field)
            out[name] = _s(raw) if name == "_updated" else tuple(json.loads(raw)[:2])
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


def _snapshot_of(
    rows: Iterable[tuple[str, Any]],
) -> tuple[dict[str, tuple[str | None, int]], dict[str, int]]:
    """Parse snapshot entries `[value, ts(, seq)]`: (field -> (value, ts), field -> seq)."""
    snap: dict[str, tuple[str | None, int]] = {}
    seqs: dict[str, int] = {}
    for name, raw in rows:
        value, ts, seq = _snapshot_entry(raw)
        snap[name] = (value, ts)
        if seq:
            seqs[name] = seq
    return snap, seqs


@functools.lru_cache(maxsize=8192)
def _snapshot_entry(raw: str | bytes) -> tuple[str | None, int, int]:
    """One stored snapshot entry, parsed once: a record's fields come back with every event
    of it (one CRM edit is often several events in one batch), mostly unchanged."""
    entry = json.loads(raw)
    return entry[0], int(entry[1]), seq_at(entry, 2)


def seq_of_time(
    snapshot: Mapping[str, tuple[str | None, int]], seqs: Mapping[str, int], ts_ms: int
) -> int:
    """The greatest seq among a record's snapshot fields dated `ts_ms` (0 when none)."""
    return max((q for f, q in seqs.items() if snapshot.get(f, (None, -1))[1] == ts_ms), default=0)


def inbox_add(pipe: Any, events: Iterable[tuple[str, str]], now: float) -> None:
    """Record acknowledged events, (fingerprint, event JSON), on the receiver's pipeline
    (two commands for the whole batch)."""
    records = dict(events)
    if records:
        pipe.hset(INBOX, mapping=records)
        pipe.zadd(INBOX_AT, dict.fromkeys(records, now), nx=True)
