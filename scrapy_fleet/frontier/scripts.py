"""The frontier's Lua scripts: each multi-step Redis operation is one of these.

Data model (see README "Redis key schema"): a request is an id (from ``seq``) whose
encoded bytes are in ``payload``; the id waits in its download slot's queue ``q:<slot>``
(a ZSET scored ``-priority * 2^40 + id``: priority first, FIFO within a priority). A slot
with queued ids is in exactly one place: ``ready`` (scored by its head, so the best
request of all ready slots is ZRANGE 0 0), ``delayed`` (scored by the time its politeness
delay ends), or neither while ``cap`` of its requests are in flight. A popped id moves to
its worker's ``lease:<worker>`` HASH (id -> "score slot") until acknowledged.

Every script takes the same leading KEYS and ARGV, used by the shared helpers:
  KEYS[1] ready  KEYS[2] delayed  KEYS[3] nextok  KEYS[4] inflight  KEYS[5] stats
  KEYS[6] payload
  ARGV[1] queue key prefix ("...:q:")   ARGV[2] in-flight cap per slot
Time is Redis server time (TIME), so workers on machines with skewed clocks agree.
Stats ``pending`` and ``leased`` are gauges kept exact by these scripts alone.
"""

from __future__ import annotations

PRELUDE = r"""
local K = {ready = KEYS[1], delayed = KEYS[2], nextok = KEYS[3], inflight = KEYS[4],
           stats = KEYS[5], payload = KEYS[6], qprefix = ARGV[1], cap = tonumber(ARGV[2])}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Put a slot where it belongs: in `ready` if it has queued ids, is under its in-flight
-- cap and its delay is over; in `delayed` if only the delay holds it back.
local function schedule_slot(slot, now)
  if redis.call('ZSCORE', K.ready, slot) or redis.call('ZSCORE', K.delayed, slot) then
    return
  end
  local head = redis.call('ZRANGE', K.qprefix .. slot, 0, 0, 'WITHSCORES')
  if #head == 0 then return end
  if tonumber(redis.call('HGET', K.inflight, slot) or '0') >= K.cap then return end
  local ok = tonumber(redis.call('HGET', K.nextok, slot) or '0')
  if ok > now then
    redis.call('ZADD', K.delayed, ok, slot)
    redis.call('HINCRBY', K.stats, 'politeness/delayed', 1)  -- work held back by politeness
  else
    redis.call('ZADD', K.ready, head[2], slot)
  end
end

-- One fewer request of this slot in flight.
local function release_slot(slot)
  if redis.call('HINCRBY', K.inflight, slot, -1) <= 0 then
    redis.call('HDEL', K.inflight, slot)
  end
end

-- Move one leased id back to its slot's queue; returns 1 if it was leased.
local function requeue(lease_key, id, now)
  local entry = redis.call('HGET', lease_key, id)
  if not entry then return 0 end
  redis.call('HDEL', lease_key, id)
  local sp = string.find(entry, ' ', 1, true)
  local score, slot = string.sub(entry, 1, sp - 1), string.sub(entry, sp + 1)
  redis.call('ZADD', K.qprefix .. slot, score, id)
  release_slot(slot)
  schedule_slot(slot, now)
  redis.call('HINCRBY', K.stats, 'pending', 1)
  redis.call('HINCRBY', K.stats, 'leased', -1)
  return 1
end
"""

# Dedupe and enqueue a batch of requests in one round trip.
# KEYS[7] seq  KEYS[8] seen
# ARGV[3..] groups of 4: fingerprint ("" = dont_filter), slot, priority, payload
# Returns one integer per request: 1 enqueued, 0 duplicate.
PUSH = PRELUDE + r"""
local now = now_ms()
local out = {}
local added, dups = 0, 0
for i = 3, #ARGV, 4 do
  local fp, slot, prio, blob = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  if fp ~= '' and redis.call('SADD', KEYS[8], fp) == 0 then
    dups = dups + 1
    out[#out + 1] = 0
  else
    local id = redis.call('INCR', KEYS[7])
    local score = string.format('%.17g', -prio * 1099511627776 + id)
    redis.call('HSET', K.payload, id, blob)
    redis.call('ZADD', K.qprefix .. slot, score, id)
    -- a better head lowers the slot's score in `ready`; otherwise place the slot
    if not redis.call('ZSCORE', K.ready, slot) then
      schedule_slot(slot, now)
    else
      redis.call('ZADD', K.ready, 'XX', 'LT', score, slot)
    end
    added = added + 1
    out[#out + 1] = 1
  end
end
if added > 0 then
  redis.call('HINCRBY', K.stats, 'pending', added)
  redis.call('HINCRBY', K.stats, 'enqueued', added)
end
if dups > 0 then redis.call('HINCRBY', K.stats, 'duplicate', dups) end
return out
"""

# Lease up to n requests to a worker: the best-scored head among ready slots, one at a
# time, honouring each slot's delay and in-flight cap. Also refreshes the heartbeat.
# KEYS[7] lease:<worker>  KEYS[8] workers  KEYS[9] slotdelay
# ARGV[3] n  ARGV[4] default delay ms  ARGV[5] worker id
# Returns a flat list: id1, payload1, id2, payload2, ... (payload false if missing).
POP = PRELUDE + r"""
local now = now_ms()
local n, delay, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZADD', KEYS[8], now, worker)
for _, slot in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', K.delayed, slot)
  schedule_slot(slot, now)
end
local out = {}
local taken = 0
while taken < n do
  local top = redis.call('ZRANGE', K.ready, 0, 0)
  if #top == 0 then break end
  local slot = top[1]
  local popped = redis.call('ZPOPMIN', K.qprefix .. slot)
  redis.call('ZREM', K.ready, slot)
  if #popped > 0 then
    local id, score = popped[1], popped[2]
    redis.call('HSET', KEYS[7], id, score .. ' ' .. slot)
    redis.call('HINCRBY', K.inflight, slot, 1)
    local d = tonumber(redis.call('HGET', KEYS[9], slot) or delay)
    if d > 0 then redis.call('HSET', K.nextok, slot, now + d) end
    schedule_slot(slot, now)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', K.payload, id) or false
    taken = taken + 1
  end
end
if taken > 0 then
  redis.call('HINCRBY', K.stats, 'pending', -taken)
  redis.call('HINCRBY', K.stats, 'leased', taken)
  redis.call('HINCRBY', K.stats, 'popped', taken)
end
return out
"""

# Acknowledge leased ids: their requests are done (or invalid), forget them.
# KEYS[7] lease:<worker>   ARGV[3] stats field to count them under ("acked"/"invalid")
# ARGV[4..] ids.  Returns how many were still leased (acks are idempotent).
ACK = PRELUDE + r"""
local now = now_ms()
local done = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local entry = redis.call('HGET', KEYS[7], id)
  if entry then
    redis.call('HDEL', KEYS[7], id)
    redis.call('HDEL', K.payload, id)
    local slot = string.sub(entry, string.find(entry, ' ', 1, true) + 1)
    release_slot(slot)
    schedule_slot(slot, now)
    done = done + 1
  end
end
if done > 0 then
  redis.call('HINCRBY', K.stats, 'leased', -done)
  redis.call('HINCRBY', K.stats, ARGV[3], done)
end
return done
"""

# Hand leased ids back to the queue (graceful stop); with no ids, all of the worker's.
# KEYS[7] lease:<worker>   ARGV[3..] ids.   Returns how many went back.
REQUEUE = PRELUDE + r"""
local now = now_ms()
local ids = {}
if #ARGV >= 3 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('HKEYS', KEYS[7])
end
local n = 0
for _, id in ipairs(ids) do n = n + requeue(KEYS[7], id, now) end
if n > 0 then redis.call('HINCRBY', K.stats, 'requeued', n) end
return n
"""

# Give the leases of dead workers (no heartbeat for ARGV[4] ms) back to the queue.
# KEYS[7] workers  KEYS[8] seeding   ARGV[3] lease key prefix  ARGV[4] lease timeout ms
# Returns a flat list: dead worker, number of its requests reclaimed, ...
RECLAIM = PRELUDE + r"""
local now = now_ms()
local out = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[4]))) do
  local lease_key = ARGV[3] .. w
  local n = 0
  for _, id in ipairs(redis.call('HKEYS', lease_key)) do n = n + requeue(lease_key, id, now) end
  redis.call('DEL', lease_key)
  redis.call('ZREM', KEYS[7], w)
  redis.call('SREM', KEYS[8], w)
  if n > 0 then redis.call('HINCRBY', K.stats, 'reclaimed', n) end
  out[#out + 1] = w
  out[#out + 1] = n
end
return out
"""

# Is the crawl finished? Nothing pending, nothing leased, no live worker still seeding,
# and the start requests were fed at least once. Marks the crawl done when it is.
# KEYS[7] workers  KEYS[8] seeding  KEYS[9] state
# ARGV[3] lease timeout ms  ARGV[4] this worker  ARGV[5] "1" = never finish (keep-alive)
# Returns {finished 0/1, pending, leased, live workers, live seeders}.
CHECK_FINISHED = PRELUDE + r"""
local now = now_ms()
local stale = now - tonumber(ARGV[3])
local pending = tonumber(redis.call('HGET', K.stats, 'pending') or '0')
local leased = tonumber(redis.call('HGET', K.stats, 'leased') or '0')
local live = redis.call('ZCOUNT', KEYS[7], stale, '+inf')
local seeders = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[8])) do
  local beat = redis.call('ZSCORE', KEYS[7], w)
  if w ~= ARGV[4] and beat and tonumber(beat) >= stale then seeders = seeders + 1 end
end
if redis.call('HGET', KEYS[9], 'status') == 'done' then
  return {1, pending, leased, live, seeders}
end
if pending == 0 and leased == 0 and seeders == 0 and ARGV[5] ~= '1'
    and redis.call('HGET', KEYS[9], 'seeded') == '1' then
  redis.call('HSET', KEYS[9], 'status', 'done', 'finished_at', now)
  return {1, pending, leased, live, seeders}
end
return {0, pending, leased, live, seeders}
"""

# Record a heartbeat at server time.  KEYS[1] workers  ARGV[1] worker id
HEARTBEAT = r"""
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1
"""

# Pause a slot for every worker (Retry-After, backoff): nothing of it is leased before
# now + ARGV[3] ms.   KEYS: the common six.   ARGV[3] pause ms  ARGV[4] slot
PAUSE_SLOT = PRELUDE + r"""
local now = now_ms()
local slot = ARGV[4]
local until_ms = now + tonumber(ARGV[3])
if tonumber(redis.call('HGET', K.nextok, slot) or '0') < until_ms then
  redis.call('HSET', K.nextok, slot, until_ms)
end
if redis.call('ZREM', K.ready, slot) == 1 or redis.call('ZSCORE', K.delayed, slot) then
  redis.call('ZADD', K.delayed, redis.call('HGET', K.nextok, slot), slot)
end
return until_ms
"""
