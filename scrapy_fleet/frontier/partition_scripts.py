"""The Lua scripts of a crawl split into partitions (scrapy_fleet/frontier/partitions.py).

A split crawl keeps its queues, leases and seen-set in P partitions, each under its own
hash tag, and its control keys (workers, seeding, state, totals) under the crawl's own
(keys.py). A Redis Cluster runs a script on one slot only, so no script here touches two
of them: the partition scripts run on the common keys of one partition (``PRELUDE``), the
control scripts on control keys alone. What spans partitions (reclaiming a dead worker,
a worker leaving, deciding the crawl has ended) is a sequence of these, each step safe
to repeat, in an order that never loses a request (partitions.py says why).

Every key a script touches is in KEYS, as in scripts.py: the queues a partition script may
touch are declared by the caller (the slots of the leases it hands back, read first).
"""

from __future__ import annotations

from scrapy_fleet.frontier.scripts import PRELUDE

# Hand every lease of some workers back to this partition's queues: the workers left
# (``field`` "requeued") or were found dead ("reclaimed"). Their lease hashes go, unless a
# lease stayed because its queue was not declared (the caller reads the slots again).
# KEYS[7] seq  KEYS[8..] lease:<worker> (this partition's)  ARGV[3] field
# Returns {requests that went back, per lease hash}, {leases that stayed, per lease hash}.
HAND_BACK = PRELUDE + r"""
check_gauges()
local backs, missing = {}, {}
for i = 8, K.last do
  local n, left = requeue_all(KEYS[i], redis.call('HKEYS', KEYS[i]), KEYS[7], ARGV[3])
  backs[#backs + 1], missing[#missing + 1] = n, left
  if left == 0 then redis.call('DEL', KEYS[i]) end
end
return {backs, missing}
"""

# The first look at a partition when the end of the crawl is decided: is it empty (nothing
# queued, ready, delayed or leased)? Repairs as the one-partition CHECK_FINISHED does:
# in-flight counts recounted from the leases of the workers on record (so a count left by
# junk cannot hold the crawl open), queues outside `ready`/`delayed` rescheduled, gauges
# below 0 reset. A gauge above 0 with empty queues is lost work.
# Leases of a worker that is neither on record nor has leased here within the lease
# timeout are orphans (a worker forgotten by a reclaim in the instant it leased again,
# then killed): they go back to the queue, counted as reclaimed.
# KEYS[7] state (the partition's)  KEYS[8] seq  KEYS[9] leasebeats
# KEYS[10..9+R] lease:<worker> of every worker on record, then the other lease hashes of
# this partition (the caller's SCAN, when asked for: "orphans")
# ARGV[3] crawl id  ARGV[4] partition number (for messages)  ARGV[5] lease key prefix
# ARGV[6] lease timeout ms  ARGV[7] R  ARGV[8] "1": the other lease hashes were looked for
# Returns {status, pending, leased, version, detail}: status "empty", "busy", "lost" or
# "orphans" (more leased than the workers on record hold: look for the other lease
# hashes and call again); version changes with every push and ack there (its totals
# enqueued, acked, invalid).
CHECK_PART = PRELUDE + r"""
local id = redis.call('HGET', KEYS[7], 'id')
if id ~= ARGV[3] then
  return {'lost', 0, 0, '', id and ('partition ' .. ARGV[4] .. ' holds another crawl')
                                   or ('the state of partition ' .. ARGV[4] .. ' is gone')}
end
check_gauges()
local now = now_ms()
local g = redis.call('HMGET', K.stats, 'pending', 'leased', 'enqueued', 'acked', 'invalid')
local pending, leased = num(g[1], 0), num(g[2], 0)
local version = table.concat({g[3] or '0', g[4] or '0', g[5] or '0'}, '/')
local function busy() return {'busy', pending, leased, version, ''} end
if has_queued() then return busy() end
local counts, total, on_record = {}, 0, 9 + tonumber(ARGV[7])
for i = 10, on_record do total = total + count_leases(KEYS[i], counts) end
if leased > total then
  -- more leased than the workers on record hold: orphaned lease hashes?
  if ARGV[8] ~= '1' then return {'orphans', pending, leased, version, ''} end
  local stale = now - tonumber(ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', '(' .. stale)
  local back, left = 0, 0
  for i = on_record + 1, K.last do
    local key = KEYS[i]
    if redis.call('ZSCORE', KEYS[9], string.sub(key, #ARGV[5] + 1)) then
      total = total + count_leases(key, counts)  -- joined since its record was read
    else
      local n, missing = requeue_all(key, redis.call('HKEYS', key), KEYS[8], 'reclaimed')
      back, left = back + n, left + missing
      if missing == 0 then redis.call('DEL', key) end
    end
  end
  if left > 0 then return busy() end  -- leases came after the caller read them: again
  if back > 0 then
    g = redis.call('HMGET', K.stats, 'pending', 'leased')
    pending, leased = num(g[1], 0), num(g[2], 0)
    return busy()
  end
end
if redis.call('EXISTS', K.inflight) == 1 then
  fix_inflight(counts, now)
  if total > 0 or has_queued() then return busy() end
end
if pending > 0 then
  reschedule_all(now)
  if has_queued() then
    incr(K.stats, 'corrupt', 1)
    return busy()
  end
end
if pending > 0 or leased > 0 then
  return {'lost', pending, leased, version,
          string.format('%d queued and %d leased requests of partition %s are missing from Redis',
                        pending, leased, ARGV[4])}
end
if pending < 0 or leased < 0 then
  redis.call('HSET', K.stats, 'pending', 0, 'leased', 0)
  incr(K.stats, 'corrupt', 1)
end
return {'empty', 0, 0, version, ''}
"""

# Seal an empty partition: until the seal ends (ARGV[5] ms from now) it refuses pushes,
# so once every partition is sealed, all are empty at one instant and none can change:
# the crawl has ended exactly (partitions.py). A partition with any work is not sealed.
# KEYS[7] state (the partition's)  ARGV[3] crawl id  ARGV[4] token  ARGV[5] seal ms
# Returns "sealed", "busy" or "lost".
SEAL_PART = PRELUDE + r"""
if redis.call('HGET', KEYS[7], 'id') ~= ARGV[3] then return 'lost' end
if has_queued() or redis.call('EXISTS', K.inflight) == 1 then return 'busy' end
local g = redis.call('HMGET', K.stats, 'pending', 'leased')
if num(g[1], 0) ~= 0 or num(g[2], 0) ~= 0 then return 'busy' end
redis.call('HSET', KEYS[7], 'sealed', ARGV[4] .. ' ' .. (now_ms() + tonumber(ARGV[5])))
return 'sealed'
"""

# Lift this checker's seal (the crawl goes on), or mark the partition done for good (the
# crawl ended): a done partition refuses pushes as a finished one-partition crawl does.
# KEYS[1] state (the partition's)  ARGV[1] token ("": any)  ARGV[2] "done" or "open"
# ARGV[3] crawl id.
UNSEAL_PART = r"""
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[3] then return 0 end
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'status', 'done')
  redis.call('HDEL', KEYS[1], 'sealed')
  return 1
end
local seal = redis.call('HGET', KEYS[1], 'sealed')
if seal and (ARGV[1] == '' or string.sub(seal, 1, #ARGV[1] + 1) == ARGV[1] .. ' ') then
  redis.call('HDEL', KEYS[1], 'sealed')
end
return 1
"""

# Mark a partition as belonging to the crawl (its id), unless it already does; one that
# holds another crawl's id is not taken over.  KEYS[1] state (the partition's)
# ARGV[1] crawl id.  Returns the id the partition holds.
CLAIM_PART = r"""
redis.call('HSETNX', KEYS[1], 'id', ARGV[1])
return redis.call('HGET', KEYS[1], 'id')
"""

# --- control scripts: the crawl's own slot --------------------------------------------

_CONTROL = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(v, default)
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end
"""

# The workers found dead (no heartbeat for ARGV[1] ms), to reclaim; a heartbeat in the
# future (junk: HEARTBEAT never writes one) is dropped and counted.
# KEYS[1] workers  KEYS[2] stats   ARGV[1] lease timeout ms.   Returns the dead workers.
DEAD_WORKERS = _CONTROL + r"""
local now = now_ms()
local timeout = tonumber(ARGV[1])
local future = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now + timeout), '+inf')
for _, w in ipairs(future) do redis.call('ZREM', KEYS[1], w) end
if #future > 0 then redis.call('HINCRBY', KEYS[2], 'corrupt', #future) end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - timeout)
"""

# The workers whose leases every partition has handed back: no longer workers, unless
# one sent a heartbeat meanwhile (it was only slow; it finds its leases gone).
# ``state.reclaimed_at`` records when (see CHECK_FINISHED on start-key batches).
# KEYS[1] workers  KEYS[2] seeding  KEYS[3] state  ARGV[1] lease timeout ms
# ARGV[2..] workers.   Returns how many were removed.
FORGET_WORKERS = _CONTROL + r"""
local now = now_ms()
local stale, n = now - tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  local beat = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not beat or tonumber(beat) <= stale then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('SREM', KEYS[2], ARGV[i])
  end
end
if n > 0 then redis.call('HSET', KEYS[3], 'reclaimed_at', now) end
return n
"""

# A worker that handed back its leases in every partition leaves the crawl.
# KEYS[1] workers  KEYS[2] seeding  ARGV[1] worker.
DEREGISTER = r"""
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# The control side of "has the crawl ended?", before (ARGV[4] "begin") and after
# ("decide") the partitions were looked at, and on finding work in one ("busy").
# begin: {status, live workers, live seeders, workers on record...}
# busy: clears ``idle_since`` (a keep-alive crawl with work is not idle); {"running"}
# decide: the one-partition rules (CHECK_FINISHED): no live seeder, seeded once, a
#   start-key crawl's dead workers reclaimed and their batches' leases out, a keep-alive
#   crawl idle for its timeout (idle since the partitions' versions, ARGV[5], last
#   changed). Then the check lock (ARGV[6] token, ARGV[7] ms): one worker seals at a time.
#   {"seal", ended by ("" or "idle_timeout")} or {"running"}.
# KEYS[1] workers  KEYS[2] seeding  KEYS[3] state  KEYS[4] checklock
# ARGV[1] lease timeout ms  ARGV[2] this worker  ARGV[3] crawl id  ARGV[4] step
# ARGV[5] versions  ARGV[6] token  ARGV[7] lock ms  ARGV[8] "1" = this worker is keep-alive
CHECK_CONTROL = _CONTROL + r"""
local state_id = redis.call('HGET', KEYS[3], 'id')
if state_id ~= ARGV[3] then
  return {'lost', 0, 0, state_id and 'replaced by another crawl' or 'the crawl state is gone'}
end
local now = now_ms()
local stale = now - tonumber(ARGV[1])
local status = redis.call('HGET', KEYS[3], 'status')
if status == 'done' or status == 'failed' then
  return {status, 0, 0, redis.call('HGET', KEYS[3], 'error') or ''}
end
local seeders = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local beat = redis.call('ZSCORE', KEYS[1], w)
  if w ~= ARGV[2] and beat and tonumber(beat) >= stale then seeders = seeders + 1 end
end
local step = ARGV[4]
if step == 'begin' then
  local out = {'begin', redis.call('ZCOUNT', KEYS[1], stale, '+inf'), seeders, ''}
  for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do out[#out + 1] = w end
  return out
end
if step == 'busy' then
  redis.call('HDEL', KEYS[3], 'idle_since')
  return {'running'}
end
if redis.call('HGET', KEYS[3], 'versions') ~= ARGV[5] then
  -- pushes or acks since the last look: a keep-alive crawl's idle time starts again
  redis.call('HSET', KEYS[3], 'versions', ARGV[5])
  redis.call('HDEL', KEYS[3], 'idle_since')
end
if seeders > 0 or redis.call('HGET', KEYS[3], 'seeded') ~= '1' then return {'running'} end
local settings = redis.call('HMGET', KEYS[3], 'keep_alive', 'idle_timeout', 'idle_since',
                           'feeds', 'reclaimed_at')
if settings[4] == '1' then
  local dead = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. stale)
  local reclaimed = num(settings[5], 0)
  if dead > 0 or (reclaimed <= now and now - reclaimed < tonumber(ARGV[1])) then
    return {'running'}
  end
end
local ended_by = ''
if ARGV[8] == '1' or settings[1] == '1' then
  local timeout = num(settings[2], 0)
  if timeout <= 0 then return {'running'} end
  local since = num(settings[3], nil)
  if since == nil or since > now then
    redis.call('HSET', KEYS[3], 'idle_since', now)
    return {'running'}
  end
  if now - since < timeout then return {'running'} end
  ended_by = 'idle_timeout'
end
if not redis.call('SET', KEYS[4], ARGV[6], 'NX', 'PX', ARGV[7]) then return {'running'} end
return {'seal', ended_by}
"""

# Every partition is sealed: the crawl is done, if this checker still holds the lock
# (else another took over after it stalled, and the seals may have lapsed), or let go.
# KEYS[1] state  KEYS[2] checklock  ARGV[1] token  ARGV[2] "done" or "release"
# ARGV[3] ended by ("" or "idle_timeout").   Returns 1 if the crawl was marked done.
END_CHECK = _CONTROL + r"""
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
if ARGV[2] ~= 'done' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'done', 'finished_at', now_ms())
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'ended_by', ARGV[3]) end
return 1
"""
