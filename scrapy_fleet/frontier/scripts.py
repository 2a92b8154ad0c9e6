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

-- A variadic command over a long argument list, in chunks (Lua's unpack is bounded).
local function call_many(cmd, key, args)
  for i = 1, #args, 4000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 3999, #args)))
  end
end

-- Hold a slot back until its `nextok` (set by the caller): out of `ready`, into
-- `delayed`, if it has queued requests at all. Used by the politeness scripts.
local function park(slot)
  if redis.call('ZREM', K.ready, slot) == 1 or redis.call('ZSCORE', K.delayed, slot) then
    redis.call('ZADD', K.delayed, redis.call('HGET', K.nextok, slot), slot)
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
local fps = {}
for i = 3, #ARGV, 4 do
  if ARGV[i] ~= '' then fps[#fps + 1] = ARGV[i] end
end
-- one SMISMEMBER for the batch; `seen` also catches repeats within the batch
local seen, new_fps = {}, {}
for i = 1, #fps, 4000 do
  local chunk_end = math.min(i + 3999, #fps)
  local flags = redis.call('SMISMEMBER', KEYS[8], unpack(fps, i, chunk_end))
  for j = i, chunk_end do
    if flags[j - i + 1] == 1 then seen[fps[j]] = true end
  end
end
local accepted, out = {}, {}
for i = 3, #ARGV, 4 do
  local fp = ARGV[i]
  if fp ~= '' and seen[fp] then
    out[#out + 1] = 0
  else
    if fp ~= '' then
      seen[fp] = true
      new_fps[#new_fps + 1] = fp
    end
    accepted[#accepted + 1] = i
    out[#out + 1] = 1
  end
end
local added = #accepted
if #new_fps > 0 then call_many('SADD', KEYS[8], new_fps) end
if added > 0 then
  local first = redis.call('INCRBY', KEYS[7], added) - added
  local payloads, by_slot, best = {}, {}, {}
  for n, i in ipairs(accepted) do
    local id = first + n
    local slot, prio = ARGV[i + 1], tonumber(ARGV[i + 2])
    local score = -prio * 1099511627776 + id
    payloads[#payloads + 1] = id
    payloads[#payloads + 1] = ARGV[i + 3]
    local members = by_slot[slot]
    if not members then
      members = {}
      by_slot[slot] = members
    end
    members[#members + 1] = string.format('%.17g', score)
    members[#members + 1] = id
    if not best[slot] or score < best[slot] then best[slot] = score end
  end
  call_many('HSET', K.payload, payloads)
  for slot, members in pairs(by_slot) do
    call_many('ZADD', K.qprefix .. slot, members)
    -- a better head lowers the slot's score in `ready`; otherwise place the slot
    local current = redis.call('ZSCORE', K.ready, slot)
    if not current then
      schedule_slot(slot, now)
    elseif best[slot] < tonumber(current) then
      redis.call('ZADD', K.ready, string.format('%.17g', best[slot]), slot)
    end
  end
  redis.call('HINCRBY', K.stats, 'pending', added)
  redis.call('HINCRBY', K.stats, 'enqueued', added)
end
if added < #out then redis.call('HINCRBY', K.stats, 'duplicate', #out - added) end
return out
"""

# Lease up to n requests to a worker: the best-scored head among ready slots, one at a
# time, honouring each slot's delay and in-flight cap. Also refreshes the heartbeat.
# KEYS[7] lease:<worker>  KEYS[8] workers  KEYS[9] slotdelay
# ARGV[3] n  ARGV[4] default delay ms  ARGV[5] worker id
# Returns {flat list id1, payload1, id2, payload2, ... (payload false if missing),
#          ms until the first delayed slot comes due, or -1 if none is delayed}.
POP = PRELUDE + r"""
local now = now_ms()
local n, delay, worker = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
redis.call('ZADD', KEYS[8], now, worker)
for _, slot in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('ZREM', K.delayed, slot)
  schedule_slot(slot, now)
end
local overrides = redis.call('EXISTS', KEYS[9]) == 1
local ids, leases = {}, {}
while #ids < n do
  local top = redis.call('ZRANGE', K.ready, 0, 0)
  if #top == 0 then break end
  local slot = top[1]
  local q = K.qprefix .. slot
  local popped = redis.call('ZPOPMIN', q)
  if #popped == 0 then
    redis.call('ZREM', K.ready, slot)
  else
    local id = popped[1]
    ids[#ids + 1] = id
    leases[#leases + 1] = id
    leases[#leases + 1] = popped[2] .. ' ' .. slot
    local inflight = redis.call('HINCRBY', K.inflight, slot, 1)
    local d = delay
    if overrides then d = tonumber(redis.call('HGET', KEYS[9], slot) or delay) end
    if d > 0 then redis.call('HSET', K.nextok, slot, now + d) end
    -- the slot was in `ready`: move it on to where it belongs now
    local head = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
    if #head == 0 or inflight >= K.cap then
      redis.call('ZREM', K.ready, slot)
    elseif d > 0 then
      redis.call('ZREM', K.ready, slot)
      redis.call('ZADD', K.delayed, now + d, slot)
      redis.call('HINCRBY', K.stats, 'politeness/delayed', 1)
    else
      redis.call('ZADD', K.ready, head[2], slot)
    end
  end
end
local out = {}
local taken = #ids
if taken > 0 then
  call_many('HSET', KEYS[7], leases)
  for i = 1, taken, 4000 do
    local chunk_end = math.min(i + 3999, taken)
    local payloads = redis.call('HMGET', K.payload, unpack(ids, i, chunk_end))
    for j = i, chunk_end do
      out[#out + 1] = ids[j]
      out[#out + 1] = payloads[j - i + 1]
    end
  end
  redis.call('HINCRBY', K.stats, 'pending', -taken)
  redis.call('HINCRBY', K.stats, 'leased', taken)
  redis.call('HINCRBY', K.stats, 'popped', taken)
end
local due = -1
local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
if #first > 0 then due = math.max(0, tonumber(first[2]) - now) end
return {out, due}
"""

# Acknowledge leased ids: their requests are done (or invalid), forget them.
# KEYS[7] lease:<worker>   ARGV[3] stats field to count them under ("acked"/"invalid")
# ARGV[4..] ids.  Returns how many were still leased (acks are idempotent).
ACK = PRELUDE + r"""
local now = now_ms()
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local found, per_slot = {}, {}
for i = 1, #ids, 4000 do
  local chunk_end = math.min(i + 3999, #ids)
  local entries = redis.call('HMGET', KEYS[7], unpack(ids, i, chunk_end))
  for j = i, chunk_end do
    local entry = entries[j - i + 1]
    if entry then
      found[#found + 1] = ids[j]
      local slot = string.sub(entry, string.find(entry, ' ', 1, true) + 1)
      per_slot[slot] = (per_slot[slot] or 0) + 1
    end
  end
end
local done = #found
if done > 0 then
  call_many('HDEL', KEYS[7], found)
  call_many('HDEL', K.payload, found)
  for slot, count in pairs(per_slot) do
    if redis.call('HINCRBY', K.inflight, slot, -count) <= 0 then
      redis.call('HDEL', K.inflight, slot)
    end
    schedule_slot(slot, now)  -- below its cap again, maybe
  end
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
