"""The frontier's Lua scripts: each multi-step Redis operation is one of these.

Data model (see README "Redis key schema"): a request is an id (from ``seq``) whose
encoded bytes are in ``payload``; the id waits in its download slot's queue ``q:<slot>``
(a ZSET scored ``-priority * 2^40 + id``: priority first, FIFO within a priority).
``heads`` records each non-empty queue's head score, so a slot is scheduled without
reading its queue. A slot with queued ids is in exactly one
place: ``ready`` (scored by its head, so the best request of all ready slots is ZRANGE 0
0), ``delayed`` (scored by the time its politeness delay ends), or neither while ``cap``
of its requests are in flight. A popped id moves to its worker's ``lease:<worker>`` HASH
(id -> "score slot") until acknowledged.

Every key a script touches is declared in KEYS; no script builds a key name. Every
script takes the same leading KEYS and ARGV, used by the shared helpers, and the same
trailing KEYS:
  KEYS[1] ready  KEYS[2] delayed  KEYS[3] nextok  KEYS[4] inflight  KEYS[5] stats
  KEYS[6] payload  ...the script's own...  heads  q:<slot> x Q (``K.last`` is the index
  of the script's own last key)
  ARGV[1] "<Q> <queue key prefix>"   ARGV[2] in-flight cap per slot
The Q queues are those the caller knows the call may touch: its pushes' slots, the slots
of the leases it hands back, the slots a pop may lease from (the last answer's hints). A
queue that was not declared is left alone: a pop leases from declared queues only, and a
lease whose queue was not declared stays leased (counted as ``missing``: the caller reads
the leases' slots again and retries).
Time is Redis server time (TIME), so workers on machines with skewed clocks agree.
Stats ``pending`` and ``leased`` are gauges kept exact by these scripts alone.

Anything in Redis may have been written by another tool (or an adversary), so the
scripts never trust what they read: numbers are parsed with ``num()`` (junk reads as a
default), counters are bumped with ``incr()`` (a junk counter is reset and counted in
``stats.corrupt``; junk gauges are recounted from ``payload`` and ``inflight`` at the start of a script),
queue members that are not ids this frontier issued are dropped and counted in
``stats.invalid``, and malformed lease entries are dropped and counted. So a script never
stops half-way through its writes on bad data: it either validates and runs to the end,
or (Redis out of memory) fails at its first write, before changing anything.

A crawl carries an id (``state.id``, set when it is created). Scripts that move work take
the id the worker joined; when ``state`` is gone or holds another id, the crawl's data
was lost (FLUSHALL, a restart without persistence, eviction) or replaced (``--fresh``):
they change nothing and answer ``lost``, and the worker stops with that message.
"""

from __future__ import annotations

from scrapy_fleet.frontier.seenset import SEEN_LUA

PRELUDE = r"""
local nq, qprefix = string.match(ARGV[1], '^(%d+) (.*)$')
nq = tonumber(nq)
local K = {ready = KEYS[1], delayed = KEYS[2], nextok = KEYS[3], inflight = KEYS[4],
           stats = KEYS[5], payload = KEYS[6], heads = KEYS[#KEYS - nq],
           last = #KEYS - nq - 1, cap = tonumber(ARGV[2])}
-- the declared queues, by slot (a queue key's slot is what follows the prefix)
local Q = {}
local slot_at = #qprefix + 1
for i = #KEYS - nq + 1, #KEYS do Q[string.sub(KEYS[i], slot_at)] = KEYS[i] end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A partition's seal ("<token> <until ms>"), set while a split crawl's end is decided
-- (partitions.py): it refuses pushes until then. Junk is no seal.
local function sealed(seal)
  if not seal then return false end
  local until_ms = tonumber(string.match(seal, ' (%d+)$') or '')
  return until_ms ~= nil and until_ms > now_ms()
end

-- A number read from Redis data; junk (not a finite number) reads as `default`.
local function num(v, default)
  local n = tonumber(v)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end

-- An integer HINCRBY would accept (Redis's string2ll: no sign but '-', no leading zero).
local function is_int(v)
  return type(v) == 'string' and #v <= 18 and (v == '0' or string.find(v, '^%-?[1-9]%d*$') ~= nil)
end

-- HINCRBY that never fails on junk: a field that is not an integer (or would overflow) is
-- reset to `n` and counted. One command, not a read first: scripts bump many counters.
-- Any other error (out of memory, a key of the wrong type) is raised as it was.
local function incr(key, field, n)
  local r = redis.pcall('HINCRBY', key, field, n)
  if type(r) ~= 'table' then return r end
  if not (string.find(r.err, 'not an integer', 1, true) or string.find(r.err, 'overflow', 1, true)) then
    error(r.err)  -- as redis.call would have raised it (a string on Redis 6.2)
  end
  redis.call('HSET', key, field, n)
  if key ~= K.stats or field ~= 'corrupt' then incr(K.stats, 'corrupt', 1) end
  return n
end

-- A slot's queue head as `heads` records it (nil: nothing queued); junk reads as "0" (the
-- slot is scheduled, and the pop that reads its queue repairs the entry).
local function head_of(slot)
  local h = redis.call('HGET', K.heads, slot)
  if not h then return nil end
  if num(h, nil) == nil then return '0' end
  return h
end

-- Record a declared queue's head in `heads` after a pop from it; returns the head's
-- score (nil: the queue is empty).
local function sync_head(slot)
  local head = redis.call('ZRANGE', Q[slot], 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('HDEL', K.heads, slot)
    return nil
  end
  redis.call('HSET', K.heads, slot, head[2])
  return head[2]
end

-- The pending/leased gauges, recounted if either holds junk: every stored payload is of a
-- request queued or leased, and `inflight` counts the leased. Called at the start of the
-- scripts that move them, before any other write.
local function check_gauges()
  local g = redis.call('HMGET', K.stats, 'pending', 'leased')
  if (not g[1] or is_int(g[1])) and (not g[2] or is_int(g[2])) then return end
  local leased = 0
  local flat = redis.call('HGETALL', K.inflight)
  for i = 2, #flat, 2 do leased = leased + math.max(0, num(flat[i], 0)) end
  local pending = math.max(0, redis.call('HLEN', K.payload) - leased)
  redis.call('HSET', K.stats, 'pending', pending, 'leased', leased)
  incr(K.stats, 'corrupt', 1)
end

-- Put a slot where it belongs: in `ready` if it has queued ids, is under its in-flight
-- cap and its delay is over; in `delayed` if only the delay holds it back.
local function schedule_slot(slot, now, head)
  if redis.call('ZSCORE', K.ready, slot) or redis.call('ZSCORE', K.delayed, slot) then
    return
  end
  head = head or head_of(slot)
  if not head then return end
  if num(redis.call('HGET', K.inflight, slot), 0) >= K.cap then return end
  local ok = num(redis.call('HGET', K.nextok, slot), 0)
  if ok > now then
    redis.call('ZADD', K.delayed, ok, slot)
    incr(K.stats, 'politeness/delayed', 1)  -- work held back by politeness
  else
    redis.call('ZADD', K.ready, head, slot)
  end
end

-- A declared queue whose head changed while its slot sat in `ready`: re-score it, or drop
-- it. Returns the head's score (nil: the queue is empty).
local function rescore_ready(slot)
  local head = sync_head(slot)
  if head then
    redis.call('ZADD', K.ready, head, slot)
  else
    redis.call('ZREM', K.ready, slot)
  end
  return head
end

-- A declared queue that gained ids (pushed, handed back), the best of them scored
-- `score`: its head recorded, its slot re-scored in `ready` or put where it belongs.
local function queue_grew(slot, score, now)
  local old = head_of(slot)
  if old and tonumber(old) <= score then return schedule_slot(slot, now, old) end
  local head = string.format('%.17g', score)
  redis.call('HSET', K.heads, slot, head)
  if redis.call('ZSCORE', K.ready, slot) then
    redis.call('ZADD', K.ready, head, slot)
  else
    schedule_slot(slot, now, head)
  end
end

-- Whether any slot has queued work that is ready or waiting out its delay.
local function has_queued()
  return redis.call('ZCARD', K.ready) > 0 or redis.call('ZCARD', K.delayed) > 0
end

-- In-flight counts that disagree with `counts` (recounted from the leases) are repaired
-- and counted; the slot's queue may have been held back by the bad count.
local function fix_inflight(counts, now)
  local flat = redis.call('HGETALL', K.inflight)
  for i = 1, #flat, 2 do
    local slot = flat[i]
    if num(flat[i + 1], -1) ~= (counts[slot] or 0) then
      incr(K.stats, 'corrupt', 1)
      if counts[slot] then redis.call('HSET', K.inflight, slot, counts[slot])
      else redis.call('HDEL', K.inflight, slot) end
      schedule_slot(slot, now)
    end
  end
end

-- Every queue put where it belongs: one outside `ready`/`delayed` is a bug or junk
-- (rare: only looked for when the gauges disagree with empty queues).
local function reschedule_all(now)
  for _, slot in ipairs(redis.call('HKEYS', K.heads)) do schedule_slot(slot, now) end
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
    redis.call('ZADD', K.delayed, num(redis.call('HGET', K.nextok, slot), 0), slot)
  end
end

-- `count` fewer requests of this slot in flight.
local function release_slot(slot, count)
  if incr(K.inflight, slot, -count) <= 0 then
    redis.call('HDEL', K.inflight, slot)
  end
end

-- A lease entry "<score> <slot>" as (score, slot); nil for junk.
local function parse_lease(entry)
  if type(entry) ~= 'string' then return nil end
  local sp = string.find(entry, ' ', 1, true)
  if not sp then return nil end
  local score = num(string.sub(entry, 1, sp - 1), nil)
  if score == nil then return nil end
  return score, string.sub(entry, sp + 1)
end

-- Count the well-formed entries of a lease hash into `counts` (slot -> leases); returns
-- how many there were.
local function count_leases(key, counts)
  local n = 0
  for _, entry in ipairs(redis.call('HVALS', key)) do
    local _, slot = parse_lease(entry)
    if slot then
      counts[slot] = (counts[slot] or 0) + 1
      n = n + 1
    end
  end
  return n
end

-- The payload of an id this frontier issued (decimal, at most `seq`); else nil and why:
-- "junk" (never issued: drop it) or "lost" (issued, but its payload is gone).
local function payload_of(id, seq)
  if type(id) ~= 'string' or #id > 15 or not string.find(id, '^%d+$') then return nil, 'junk' end
  if tonumber(id) > seq or tonumber(id) < 1 then return nil, 'junk' end
  local blob = redis.call('HGET', K.payload, id)
  if not blob then return nil, 'lost' end
  return blob
end

local function read_seq(seq_key)
  local v = redis.call('GET', seq_key)
  if v and not is_int(v) then
    -- junk in the id counter: restart it above every id still stored
    local top = 0
    for _, id in ipairs(redis.call('HKEYS', K.payload)) do top = math.max(top, num(id, 0)) end
    redis.call('SET', seq_key, top)
    incr(K.stats, 'corrupt', 1)
    return top
  end
  return num(v, 0)
end

-- Move one leased id back to its slot's queue; returns 1 if it was leased. A junk entry
-- (bad format, or an id never issued) is dropped and counted, gauges untouched. A lease
-- whose queue was not declared stays as it is; returns nil.
local function requeue(lease_key, id, now, seq)
  local entry = redis.call('HGET', lease_key, id)
  if not entry then return 0 end
  local score, slot = parse_lease(entry)
  if score and not Q[slot] then return nil end
  redis.call('HDEL', lease_key, id)
  local blob, why = nil, 'junk'
  if score then blob, why = payload_of(id, seq) end
  if not blob then
    if why == 'lost' then
      -- a real lease whose request is gone from `payload`: count it, free its slot
      incr(K.stats, 'lost', 1)
      incr(K.stats, 'leased', -1)
      release_slot(slot, 1)
    else
      incr(K.stats, 'corrupt', 1)  -- not a lease this frontier made: just drop it
    end
    return 0
  end
  redis.call('ZADD', Q[slot], string.format('%.17g', score), id)
  release_slot(slot, 1)
  queue_grew(slot, score, now)
  incr(K.stats, 'pending', 1)
  incr(K.stats, 'leased', -1)
  return 1
end

-- Hand `ids` of one lease hash back to their queues; counted under `field` (requeued,
-- reclaimed). Returns how many went back, and how many stayed leased because their
-- queue was not declared.
local function requeue_all(lease_key, ids, seq_key, field)
  local now, seq, n, missing = now_ms(), read_seq(seq_key), 0, 0
  for _, id in ipairs(ids) do
    local back = requeue(lease_key, id, now, seq)
    if back then n = n + back else missing = missing + 1 end
  end
  if n > 0 then incr(K.stats, field, n) end
  return n, missing
end

"""

# Everything a worker sends in one round trip, atomically: dedupe and enqueue new
# requests, then acknowledge finished ones, then lease more. Pushes come before acks so a
# request is never forgotten before its children are stored; being one script, a failure
# (Redis out of memory) stores nothing and acknowledges nothing.
# KEYS[7] seq  KEYS[8] seen (the SET of an old crawl: seenset.py)  KEYS[9] lease:<worker>
# KEYS[10] workers  KEYS[11] slotdelay  KEYS[12] state (a split crawl: the partition's)
# KEYS[13] seenset
# KEYS[14..] the Bloom blocks the pushes' fingerprints fall in (SeenSet.block_keys)
# ARGV[3] crawl id  ARGV[4] pushes P  ARGV[5] acks A  ARGV[6] invalid I  ARGV[7] pop n
# ARGV[8] default delay ms  ARGV[9] worker id ("": no heartbeat in KEYS[10], which is in
#         another slot in a split crawl)
# ARGV[10] start entries found bad since the last flush (counted with the pushes of the
#          same batches, so the count is exact: a batch never stored is counted again)
# ARGV[11] duplicates the worker dropped itself (its SeenCache) since the last flush
# ARGV[12] the seen-set's mode as the worker knows it  ARGV[13] its Bloom layer count
# ARGV[14..] P groups of 4 (fingerprint ("" = dont_filter), slot, priority, payload),
#            then A acked ids, then I ids of entries the worker could not decode.
# Returns {"ok", {1 enqueued / 0 duplicate per push}, {id1, payload1, ...},
#          ms until the first delayed slot comes due (-1: none), ids found lost,
#          queue members dropped as junk (never issued by this frontier), pending gauge,
#          hints: the slots the next pop should declare (the first ready ones, then the
#          first delayed; a msgpack array), 1 if ready work was left because its queue was
#          not declared}
#      or {"lost", state id found ("" if none)} having changed nothing,
#      or {"done"} having changed nothing: pushes into a finished crawl would never run
#      (a keep-alive crawl ended by its idle timeout; the feeder gives its entries back),
#      or into a partition sealed while the end of a split crawl is decided,
#      or {"stale"} having changed nothing: the worker's view of the seen-set (ARGV[12],
#      ARGV[13], KEYS[14..]) is out of date; it reads the seen-set again and retries,
#      or {"undeclared", slot} having changed nothing: a push's queue was not declared (a
#      bug of the caller).
FLUSH = PRELUDE + SEEN_LUA + r"""
local state = redis.call('HMGET', KEYS[12], 'id', 'status', 'sealed')
if state[1] ~= ARGV[3] then return {'lost', state[1] or ''} end
for g = 0, tonumber(ARGV[4]) - 1 do
  if not Q[ARGV[15 + 4 * g]] then return {'undeclared', ARGV[15 + 4 * g]} end
end
if tonumber(ARGV[4]) > 0 and (state[2] == 'done' or sealed(state[3])) then return {'done'} end
-- the push's seen-set check, planned before anything is written: a stale view of the
-- seen-set changes nothing
local seen_plan
if tonumber(ARGV[4]) > 0 then
  local fps = {}
  for g = 0, tonumber(ARGV[4]) - 1 do fps[g + 1] = ARGV[14 + 4 * g] end
  seen_plan = seen_prepare(KEYS[13], KEYS[8], 14, ARGV[12], ARGV[13], fps)
  if not seen_plan then return {'stale'} end
end
check_gauges()
local now = now_ms()
local P, A, I, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local base = 14
local pushed = {}
local bad, local_dups = tonumber(ARGV[10]), tonumber(ARGV[11])
if bad > 0 then incr(K.stats, 'feed_bad', bad) end
if local_dups > 0 then incr(K.stats, 'duplicate', local_dups) end

-- 1. push: the seen-set checks the batch's fingerprints and records the new ones, repeats
-- within the batch included ("" = dont_filter: never checked)
if P > 0 then
  local seen = seen_apply(seen_plan, true)
  local accepted = {}
  for g = 0, P - 1 do
    if seen[g + 1] then
      pushed[#pushed + 1] = 0
    else
      accepted[#accepted + 1] = base + 4 * g
      pushed[#pushed + 1] = 1
    end
  end
  local added = #accepted
  if added > 0 then
    local first = read_seq(KEYS[7])
    redis.call('SET', KEYS[7], first + added)
    local payloads, by_slot, best = {}, {}, {}
    for k, i in ipairs(accepted) do
      local id = first + k
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
      call_many('ZADD', Q[slot], members)
      queue_grew(slot, best[slot], now)  -- a better head re-scores the slot; else it is placed
    end
    incr(K.stats, 'pending', added)
    incr(K.stats, 'enqueued', added)
    redis.call('HDEL', KEYS[12], 'idle_since')  -- new work: a keep-alive crawl is not idle
  end
  if added < P then incr(K.stats, 'duplicate', P - added) end
end

-- 2. acknowledge: the requests are done (acked) or undecodable (invalid); forget them
for part = 1, 2 do
  local from, count, field = base + 4 * P, A, 'acked'
  if part == 2 then from, count, field = base + 4 * P + A, I, 'invalid' end
  if count > 0 then
    local ids = {}
    for i = from, from + count - 1 do ids[#ids + 1] = ARGV[i] end
    local found, per_slot, junk = {}, {}, 0
    for i = 1, #ids, 4000 do
      local chunk_end = math.min(i + 3999, #ids)
      local entries = redis.call('HMGET', KEYS[9], unpack(ids, i, chunk_end))
      for j = i, chunk_end do
        local entry = entries[j - i + 1]
        if entry then
          found[#found + 1] = ids[j]
          local _, slot = parse_lease(entry)
          if slot then per_slot[slot] = (per_slot[slot] or 0) + 1 else junk = junk + 1 end
        end
      end
    end
    local done = #found
    if done > 0 then
      call_many('HDEL', KEYS[9], found)
      call_many('HDEL', K.payload, found)
      for slot, c in pairs(per_slot) do
        release_slot(slot, c)
        schedule_slot(slot, now)  -- below its cap again, maybe
      end
      -- the worker acks only ids it leased: each is a real lease, even if its entry
      -- was overwritten with junk (its slot's in-flight count is recounted at the end)
      incr(K.stats, 'leased', -done)
      incr(K.stats, field, done)
      redis.call('HDEL', KEYS[12], 'idle_since')
      if junk > 0 then incr(K.stats, 'corrupt', junk) end
    end
  end
end

-- 3. lease up to n requests: the best-scored head among the ready slots whose queues
-- were declared, one at a time, honouring each slot's delay and in-flight cap; also the
-- worker's heartbeat. The answer names the slots the next pop should declare.
local out, lost, junk, hints = {}, {}, {}, {}
local due, more = -1, 0
if n > 0 then
  local delay, worker = tonumber(ARGV[8]), ARGV[9]
  if worker ~= '' then redis.call('ZADD', KEYS[10], now, worker) end
  for _, slot in ipairs(redis.call('ZRANGEBYSCORE', K.delayed, '-inf', now, 'LIMIT', 0, 256)) do
    redis.call('ZREM', K.delayed, slot)
    schedule_slot(slot, now)
  end
  local seq = read_seq(KEYS[7])
  local overrides = redis.call('EXISTS', KEYS[11]) == 1
  -- the ready slots whose queues were declared, the best first, one at a time; ready
  -- slots left in queues that were not declared are named in the answer (`more`)
  local hint_count = n + 16  -- room for slots other workers take meanwhile
  local declared, slots, scores = {}, {}, {}
  for slot in pairs(Q) do declared[#declared + 1] = slot end
  for i = 1, #declared, 4000 do
    local last = math.min(i + 3999, #declared)
    local found = redis.call('ZMSCORE', K.ready, unpack(declared, i, last))
    for j = i, last do
      if found[j - i + 1] then
        slots[#slots + 1], scores[#slots + 1] = declared[j], tonumber(found[j - i + 1])
      end
    end
  end
  local leases, taken, budget = {}, 0, n + 1000  -- bounded, however much junk is queued
  while taken < n and budget > 0 do
    budget = budget - 1
    local at, best = nil, nil
    for i = 1, #slots do
      local score = scores[i]
      if score and (not best or score < best or (score == best and slots[i] < slots[at])) then
        at, best = i, score
      end
    end
    if not at then break end
    local slot = slots[at]
    local popped = redis.call('ZPOPMIN', Q[slot])
    scores[at] = nil  -- unless still ready, below
    if #popped == 0 then
      redis.call('ZREM', K.ready, slot)
      redis.call('HDEL', K.heads, slot)
    else
      local id = popped[1]
      local blob, why = payload_of(id, seq)
      if not blob then
        -- junk was never counted as pending; a lost id was
        if why == 'junk' then
          incr(K.stats, 'invalid', 1)
          redis.call('HDEL', K.payload, id)  -- a forged payload beside it goes too
          junk[#junk + 1] = id
        else
          incr(K.stats, 'pending', -1)
          incr(K.stats, 'lost', 1)
          lost[#lost + 1] = id
        end
        scores[at] = num(rescore_ready(slot), nil)
      else
        taken = taken + 1
        out[#out + 1] = id
        out[#out + 1] = blob
        leases[#leases + 1] = id
        leases[#leases + 1] = popped[2] .. ' ' .. slot
        local inflight = incr(K.inflight, slot, 1)
        local d = delay
        if overrides then d = num(redis.call('HGET', KEYS[11], slot), delay) end
        if d > 0 then redis.call('HSET', K.nextok, slot, now + d) end
        -- the slot was in `ready`: move it on to where it belongs now
        local head = sync_head(slot)
        if not head or inflight >= K.cap then
          redis.call('ZREM', K.ready, slot)
        elseif d > 0 then
          redis.call('ZREM', K.ready, slot)
          redis.call('ZADD', K.delayed, now + d, slot)
          incr(K.stats, 'politeness/delayed', 1)
        else
          redis.call('ZADD', K.ready, head, slot)
          scores[at] = tonumber(head)
        end
      end
    end
  end
  if taken > 0 then
    call_many('HSET', KEYS[9], leases)
    incr(K.stats, 'pending', -taken)
    incr(K.stats, 'leased', taken)
    incr(K.stats, 'popped', taken)
  end
  local first = redis.call('ZRANGE', K.delayed, 0, 0, 'WITHSCORES')
  if #first > 0 then due = math.max(0, tonumber(first[2]) - now) end
  -- what the next pop should declare: the best ready slots, then the first to come due
  -- (one msgpack array: cheaper to read than as many replies)
  hints = redis.call('ZRANGE', K.ready, 0, hint_count - 1)
  if taken < n and #hints > 0 then more = 1 end  -- every slot still ready went undeclared
  for _, slot in ipairs(redis.call('ZRANGE', K.delayed, 0, math.max(16, n) - 1)) do
    hints[#hints + 1] = slot
  end
end
return {'ok', pushed, out, due, lost, junk, num(redis.call('HGET', K.stats, 'pending'), 0),
        cmsgpack.pack(hints), more}
"""

# Make the crawl's seen-set if it has none, repair junk in its HASH, and describe it
# (seenset.py). KEYS[7] seenset  KEYS[8] seen (an old crawl's SET)
# ARGV[3] mode for a new seen-set  ARGV[4] Bloom capacity  ARGV[5] Bloom error rate
# Returns {mode, first layer's capacity, bits per fingerprint, layer count} (0s: exact).
SEEN_INIT = PRELUDE + SEEN_LUA + r"""
return seen_init(KEYS[7], KEYS[8], ARGV[3], ARGV[4], ARGV[5])
"""

# Check fingerprints against the seen-set and (ARGV[5] = "1") add those not seen, as the
# push does (FleetDupeFilter.request_seen with another scheduler; "0": only check).
# KEYS[7] seenset  KEYS[8] seen (an old crawl's SET)  KEYS[9..] Bloom blocks
# ARGV[3] mode  ARGV[4] Bloom layer count (the worker's view)  ARGV[5] add  ARGV[6..] fps
# Returns {"ok", {1 seen / 0 not, per fingerprint}} or {"stale"} having changed nothing.
SEEN_ADD = PRELUDE + SEEN_LUA + r"""
local fps = {}
for i = 6, #ARGV do fps[#fps + 1] = ARGV[i] end
local plan = seen_prepare(KEYS[7], KEYS[8], 9, ARGV[3], ARGV[4], fps)
if not plan then return {'stale'} end
local out = {}
for i, seen in ipairs(seen_apply(plan, ARGV[5] == '1')) do out[i] = seen and 1 or 0 end
return {'ok', out}
"""

# Hand some leased ids back to the queue (leases lost in a failed round trip).
# KEYS[7] lease:<worker>  KEYS[8] seq   ARGV[3..] ids.
# Returns {how many went back, how many stayed leased (queue not declared)}.
REQUEUE = PRELUDE + r"""
check_gauges()
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end  -- not unpack(): its size is bounded
return {requeue_all(KEYS[7], ids, KEYS[8], 'requeued')}
"""

# Is the crawl finished? Decided on the queues themselves, not only on the gauges: no
# slot ready or delayed, nothing in flight (recounted from the live workers' leases when
# nothing is ready, so a count left behind by junk cannot hold the crawl open), no live
# worker still seeding, and the start requests fed at least once. Gauges that disagree
# with empty queues are either junk (below 0: reset) or lost work (above 0: "lost").
# KEYS[7] workers  KEYS[8] seeding  KEYS[9] state  KEYS[10..] lease:<worker> of the workers
# on record (as the caller read them: one that joined since is taken as busy)
# ARGV[3] lease timeout ms  ARGV[4] this worker  ARGV[5] "1" = this worker is keep-alive
# ARGV[6] crawl id  ARGV[7] lease key prefix (to read a worker from its lease key)
# A keep-alive crawl (``state.keep_alive``, set by any keep-alive worker that opened it, or
# this worker's ARGV[5]) is never done when idle, unless ``state.idle_timeout`` (ms) is
# set: then it is done once it has been idle that long (``state.idle_since``, which FLUSH
# clears on every push or acknowledgement, and this script when it finds work).
# A crawl fed from start keys (``state.feeds``) is not done while a worker that may hold
# a batch of start entries is dead but not yet reclaimed, nor until a lease timeout after
# the last reclaim: by then its batch's lease has run out, and the next take by a live
# worker puts the entries back (they are not in the frontier, so nothing else sees them).
# Returns {status, pending, leased, live workers, live seeders, detail} where status is
# "done", "running", "failed" (detail: the error), or "lost" (detail: what is missing).
CHECK_FINISHED = PRELUDE + r"""
local state_id = redis.call('HGET', KEYS[9], 'id')
if state_id ~= ARGV[6] then
  return {'lost', 0, 0, 0, 0, state_id and 'replaced by another crawl' or 'the crawl state is gone'}
end
check_gauges()
local now = now_ms()
local stale = now - tonumber(ARGV[3])
local live = redis.call('ZCOUNT', KEYS[7], stale, '+inf')
local seeders = 0
for _, w in ipairs(redis.call('SMEMBERS', KEYS[8])) do
  local beat = redis.call('ZSCORE', KEYS[7], w)
  if w ~= ARGV[4] and beat and tonumber(beat) >= stale then seeders = seeders + 1 end
end
local g = redis.call('HMGET', K.stats, 'pending', 'leased')
local pending, leased = num(g[1], 0), num(g[2], 0)
local status = redis.call('HGET', KEYS[9], 'status')
if status == 'done' then return {'done', pending, leased, live, seeders, ''} end
if status == 'failed' then
  return {'failed', pending, leased, live, seeders, redis.call('HGET', KEYS[9], 'error') or ''}
end
local function busy()
  redis.call('HDEL', KEYS[9], 'idle_since')
  return {'running', pending, leased, live, seeders, ''}
end
if has_queued() then return busy() end
-- nothing ready: recount what is in flight from the leases of the workers on record
if redis.call('EXISTS', K.inflight) == 1 then
  local counts, total, declared = {}, 0, {}
  for i = 10, K.last do declared[string.sub(KEYS[i], #ARGV[7] + 1)] = KEYS[i] end
  for _, w in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    if not declared[w] then return busy() end
    total = total + count_leases(declared[w], counts)
  end
  fix_inflight(counts, now)
  if total > 0 or has_queued() then return busy() end
end
-- nothing ready or in flight; a queue outside `ready`/`delayed` would be a bug or junk:
-- look for one before calling queued work lost (rare: only when the gauges disagree)
if pending > 0 then
  reschedule_all(now)
  if has_queued() then
    incr(K.stats, 'corrupt', 1)
    return busy()
  end
end
if pending > 0 or leased > 0 then
  return {'lost', pending, leased, live, seeders,
          string.format('%d queued and %d leased requests are missing from Redis', pending, leased)}
end
if pending < 0 or leased < 0 then
  redis.call('HSET', K.stats, 'pending', 0, 'leased', 0)
  incr(K.stats, 'corrupt', 1)
end
if seeders > 0 or redis.call('HGET', KEYS[9], 'seeded') ~= '1' then
  pending, leased = 0, 0
  return busy()
end
local settings = redis.call('HMGET', KEYS[9], 'keep_alive', 'idle_timeout', 'idle_since',
                           'feeds', 'reclaimed_at')
if settings[4] == '1' then
  local dead = redis.call('ZCOUNT', KEYS[7], '-inf', '(' .. stale)
  local reclaimed = num(settings[5], 0)
  if dead > 0 or (reclaimed <= now and now - reclaimed < tonumber(ARGV[3])) then
    return {'running', 0, 0, live, seeders, ''}
  end
end
if ARGV[5] == '1' or settings[1] == '1' then
  local timeout = num(settings[2], 0)
  if timeout <= 0 then return {'running', 0, 0, live, seeders, ''} end
  local since = num(settings[3], nil)
  if since == nil or since > now then
    redis.call('HSET', KEYS[9], 'idle_since', now)
    return {'running', 0, 0, live, seeders, ''}
  end
  if now - since < timeout then return {'running', 0, 0, live, seeders, ''} end
  redis.call('HSET', KEYS[9], 'ended_by', 'idle_timeout')
end
redis.call('HSET', KEYS[9], 'status', 'done', 'finished_at', now)
return {'done', 0, 0, live, seeders, ''}
"""

# Record a heartbeat at server time.  KEYS[1] workers  ARGV[1] worker id
HEARTBEAT = r"""
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1
"""

# Create the crawl's state unless it exists (one script, not a MULTI: redis-py's cluster
# pipelines before 6.x take no transactions).  KEYS[1] state
# ARGV[1] started_at  ARGV[2] a new crawl id  ARGV[3] spider class ("" = none)
# ARGV[4] partitions of a new crawl. A crawl made before partitions has one.
# Returns {the crawl's id (the new one, or the one it already had), its partitions,
#          "1" if its partitions are marked as its own (partitions.py), else "",
#          "1" if its queues are recorded in `heads`, else "" (a crawl made before
#          `heads`: RECORD_HEADS, then the caller marks it)}.
CREATE = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSETNX', KEYS[1], 'partitions', '1')
else
  redis.call('HSET', KEYS[1], 'partitions', ARGV[4], 'heads', '1')
end
redis.call('HSETNX', KEYS[1], 'status', 'running')
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1])
redis.call('HSETNX', KEYS[1], 'id', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], 'spider', ARGV[3]) end
local s = redis.call('HMGET', KEYS[1], 'id', 'partitions', 'claimed', 'heads')
return {s[1], s[2], s[3] or '', s[4] or ''}
"""

# Record the head score of each declared queue in `heads` (a crawl made before
# `heads` existed, its queues found by the caller's SCAN), and put its slot where it
# belongs. Safe to run again.   Returns how many queues were recorded.
RECORD_HEADS = PRELUDE + r"""
local now, n = now_ms(), 0
for slot in pairs(Q) do
  if sync_head(slot) then n = n + 1 end
  schedule_slot(slot, now)
end
return n
"""

# A worker starts ("start") or stops feeding start requests, having fed them all ("done":
# the crawl is seeded) or not ("abort").  KEYS[1] seeding  KEYS[2] state  ARGV[1] worker
# ARGV[2] start, done or abort.
SEEDING = r"""
if ARGV[2] == 'start' then
  redis.call('SADD', KEYS[1], ARGV[1])
else
  if ARGV[2] == 'done' then redis.call('HSET', KEYS[2], 'seeded', '1') end
  redis.call('SREM', KEYS[1], ARGV[1])
end
return 1
"""

# A worker's report (scrapy_fleet/observe/worker.py): its counters (pages, items,
# errors...) added to the crawl's totals in `stats`, its failed requests by kind and by
# download slot, and its row of the worker table. A report key of the wrong type (junk)
# is replaced, so a report never fails on junk. Each report of a worker has the next
# number: one sent again (its answer was lost with the connection) is not added twice.
# KEYS[7] errorkinds (hash)  KEYS[8] hosterrors (zset: the top hosts are cheap)
# KEYS[9] workerinfo (hash: worker id -> JSON)  KEYS[10] workers  KEYS[11] reportseq
# ARGV[3] worker id  ARGV[4] its row ("" = unchanged)  ARGV[5] T  ARGV[6] K
# ARGV[7] the report's number (0: not numbered)
# ARGV[8..] T (stats field, amount) pairs, then K (kind, count) pairs, then (slot, count)
# pairs to the end.  Returns how many totals held junk (reset, counted in `corrupt`), or
# -1 for a report already taken.
REPORT = PRELUDE + r"""
local before = num(redis.call('HGET', K.stats, 'corrupt'), 0)
for _, pair in ipairs({{7, 'hash'}, {8, 'zset'}, {9, 'hash'}, {11, 'hash'}}) do
  local k, want = pair[1], pair[2]
  local kind = redis.call('TYPE', KEYS[k])
  if type(kind) == 'table' then kind = kind.ok end
  if kind ~= want and kind ~= 'none' then
    redis.call('DEL', KEYS[k])
    incr(K.stats, 'corrupt', 1)
  end
end
local seq = tonumber(ARGV[7])
if seq > 0 then
  local last = tonumber(redis.call('HGET', KEYS[11], ARGV[3]) or '')
  if last and last >= seq then return -1 end
  redis.call('HSET', KEYS[11], ARGV[3], seq)
end
local i, t, k = 8, tonumber(ARGV[5]), tonumber(ARGV[6])
for _ = 1, t do
  incr(K.stats, ARGV[i], tonumber(ARGV[i + 1]))
  i = i + 2
end
for _ = 1, k do
  incr(KEYS[7], ARGV[i], tonumber(ARGV[i + 1]))
  i = i + 2
end
while i < #ARGV do
  redis.call('ZINCRBY', KEYS[8], tonumber(ARGV[i + 1]), ARGV[i])
  i = i + 2
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[9], ARGV[3], ARGV[4])
  -- rows of workers that left stay for the dashboard, but not without end (a keep-alive
  -- crawl restarts workers for weeks): past 1000 rows, only registered workers keep theirs
  if redis.call('HLEN', KEYS[9]) > 1000 then
    for _, w in ipairs(redis.call('HKEYS', KEYS[9])) do
      if not redis.pcall('ZSCORE', KEYS[10], w) then
        redis.call('HDEL', KEYS[9], w)
        redis.call('HDEL', KEYS[11], w)
      end
    end
  end
end
return num(redis.call('HGET', K.stats, 'corrupt'), 0) - before
"""

# Redis server time of the node that holds the crawl (TIME names no key, so a Redis
# Cluster client could send it anywhere).  KEYS[1] any key of the crawl.
NOW = r"""
return redis.call('TIME')
"""
