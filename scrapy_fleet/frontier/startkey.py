"""A Redis key that producers push start entries into (scrapy-redis's ``redis_key``).

Producers ``LPUSH``/``RPUSH`` a list, ``SADD`` a set or ``ZADD`` a sorted set; workers take
entries from it at least once: TAKE moves a batch out of the key into the ``feeding``
HASH (one field per batch, with a lease deadline) in one script, the worker turns the
entries into requests and stores them in the frontier, and only then acknowledges the
batch (the field is deleted by its next TAKE, or by ACK). A worker killed in between
leaves its batch in ``feeding``; once the deadline passes, the next TAKE by any worker
puts the entries back into the key. So no entry is lost, and with several workers each
entry is taken by one of them (again only after a lease ran out).

Entries come out as scrapy-redis takes them: a list from its head (``LPUSH`` + take from
the head, as scrapy-redis's ``LRANGE 0 n-1`` + ``LTRIM``), a set at random (``SPOP``),
a sorted set highest score first (as scrapy-redis's ``ZREVRANGE``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Shared by both scripts: a stored batch back into the start key, into whatever structure
# the key is now (the batch's own if the key is gone); false if the key became something
# else (a string...): the batch then stays where it is.
PUT_BACK = r"""
local function num_score(v)
  if type(v) ~= 'number' or v ~= v then return 0 end
  return v
end

local function put_back(raw)
  local ok, batch = pcall(cmsgpack.unpack, raw)
  if not ok or type(batch) ~= 'table' or type(batch[1]) ~= 'number'
     or type(batch[3]) ~= 'table' then
    return nil  -- junk: not a batch we stored
  end
  local kind = redis.call('TYPE', KEYS[1]).ok
  if kind == 'none' then kind = batch[2] end
  local entries, scores = batch[3], batch[4] or {}
  if kind == 'list' then
    -- to the head, in the order they were taken
    for i = #entries, 1, -1 do redis.call('LPUSH', KEYS[1], entries[i]) end
  elseif kind == 'set' then
    for i = 1, #entries do redis.call('SADD', KEYS[1], entries[i]) end
  elseif kind == 'zset' then
    for i = 1, #entries do redis.call('ZADD', KEYS[1], num_score(scores[i]), entries[i]) end
  else
    return false
  end
  return #entries
end
"""

# Take up to n entries from the start key, after acknowledging earlier batches and putting
# back the batches whose lease ran out. A batch is the field "<lease end ms> <name>" (the
# deadline in the name, so finding expired batches reads names only: HKEYS, not every
# batch's entries) holding cmsgpack {deadline ms, kind, {entries}, {scores}} (cmsgpack:
# entries are bytes, maybe not UTF-8).
# KEYS[1] start key  KEYS[2] feeding HASH
# ARGV[1] n  ARGV[2] name for this batch  ARGV[3] lease ms  ARGV[4] max entry bytes
# ARGV[5..] fields to acknowledge
# Returns {kind ("list", "set", "zset", "none" or another type: not taken from),
#          {entries}, entries put back from expired batches, junk batches dropped,
#          entries dropped for being over the size limit (never sent to the worker),
#          the new batch's field ("" if none)}
TAKE = PUT_BACK + r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local now = now_ms()
local ftype = redis.call('TYPE', KEYS[2]).ok
if ftype ~= 'hash' and ftype ~= 'none' then
  redis.call('DEL', KEYS[2])  -- not written by us: nothing of ours to keep
end
for i = 5, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end

-- batches whose worker did not acknowledge them in time go back into the key
local returned, junk = 0, 0
for _, field in ipairs(redis.call('HKEYS', KEYS[2])) do
  local deadline = tonumber(string.match(field, '^(%d+) '))
  if deadline == nil then
    redis.call('HDEL', KEYS[2], field)  -- not a field this script wrote
    junk = junk + 1
  elseif deadline <= now then
    local n = put_back(redis.call('HGET', KEYS[2], field))
    if n == nil then
      redis.call('HDEL', KEYS[2], field)
      junk = junk + 1
    elseif n then
      redis.call('HDEL', KEYS[2], field)
      returned = returned + n
    end
  end
end

local stype = redis.call('TYPE', KEYS[1]).ok

local n, limit = tonumber(ARGV[1]), tonumber(ARGV[4])
local taken, scores = {}, {}
if stype == 'list' then
  taken = redis.call('LRANGE', KEYS[1], 0, n - 1)
  if #taken > 0 then redis.call('LTRIM', KEYS[1], #taken, -1) end
elseif stype == 'set' then
  taken = redis.call('SPOP', KEYS[1], n)
elseif stype == 'zset' then
  local flat_z = redis.call('ZPOPMAX', KEYS[1], n)
  for i = 1, #flat_z, 2 do
    taken[#taken + 1] = flat_z[i]
    scores[#scores + 1] = tonumber(flat_z[i + 1])
  end
end
-- an entry too large to be a request is dropped here: it never reaches a worker's memory
local entries, kept_scores, oversize = {}, {}, 0
for i = 1, #taken do
  if #taken[i] > limit then
    oversize = oversize + 1
  else
    entries[#entries + 1] = taken[i]
    kept_scores[#kept_scores + 1] = scores[i]
  end
end
scores = kept_scores
local field = ''
if #entries > 0 then
  local deadline = now + tonumber(ARGV[3])
  field = string.format('%d %s', deadline, ARGV[2])
  redis.call('HSET', KEYS[2], field, cmsgpack.pack({deadline, stype, entries, scores}))
end
return {stype, entries, returned, junk, oversize, field}
"""

# Put batches back into the start key at once (a worker stopping, or a crawl that ended
# before they were stored); a batch the key cannot take now stays for TAKE to retry.   KEYS[1] start key  KEYS[2] feeding   ARGV fields.
# Returns how many entries went back.
GIVE_BACK = PUT_BACK + r"""
local n = 0
for _, f in ipairs(ARGV) do
  local raw = redis.call('HGET', KEYS[2], f)
  if raw then
    local back = put_back(raw)
    if back ~= false then redis.call('HDEL', KEYS[2], f) end
    if back then n = n + back end
  end
end
return n
"""

KINDS = ("list", "set", "zset")


@dataclass
class Batch:
    """Entries taken from the key, held by this worker until acknowledged."""

    key: str
    field: str
    entries: list[bytes]


@dataclass
class TakeResult:
    kind: str  # the key's Redis type: "list", "set", "zset", "none" (empty), or another
    batch: Batch | None
    returned: int = 0  # entries of expired batches put back into the key
    junk: int = 0  # unreadable batches dropped from ``feeding``
    oversize: int = 0  # entries over ``max_entry_bytes``, dropped without being read
    acked: list[str] = field(default_factory=list)


class StartKey:
    """One start key and its ``feeding`` HASH. ``call`` runs a Redis operation with the
    frontier's retries (``RedisFrontier.call``); it gets ``what`` and ``wait``."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        feeding_key: str,
        worker_id: str,
        *,
        lease_timeout: float,
        max_entry_bytes: int = 8 << 20,
        call: Callable[..., Any] | None = None,
    ) -> None:
        self.client = client
        self.key = key
        self.feeding_key = feeding_key
        self.worker_id = worker_id
        self.lease_ms = int(lease_timeout * 1000)
        self.max_entry_bytes = max_entry_bytes
        self._call = call or (lambda operation, what, wait=True: operation())
        self._take = client.register_script(TAKE)
        self._give_back = client.register_script(GIVE_BACK)
        self._batches = 0

    def take(self, n: int, acks: Sequence[str] = (), *, wait: bool = True) -> TakeResult:
        """Acknowledge ``acks`` (batches now stored in the frontier), then take up to
        ``n`` entries as a new batch."""
        self._batches += 1
        name = f"{self.worker_id} {self._batches}"
        kind, entries, returned, junk, oversize, field = self._call(
            lambda: self._take(keys=[self.key, self.feeding_key],
                               args=[n, name, self.lease_ms, self.max_entry_bytes, *acks],
                               client=self.client),
            f"take start URLs from {self.key!r}", wait=wait,
        )
        kind = _text(kind)
        batch = Batch(self.key, _text(field), list(entries)) if entries else None
        return TakeResult(kind, batch, int(returned), int(junk), int(oversize), list(acks))

    def ack(self, fields: Sequence[str], *, wait: bool = True) -> None:
        if fields:
            self._call(lambda: self.client.hdel(self.feeding_key, *fields),
                       f"acknowledge start URLs taken from {self.key!r}", wait=wait)

    def give_back(self, fields: Sequence[str], *, wait: bool = True) -> int:
        if not fields:
            return 0
        return int(self._call(
            lambda: self._give_back(keys=[self.key, self.feeding_key], args=list(fields),
                                    client=self.client),
            f"give start URLs back to {self.key!r}", wait=wait,
        ))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
