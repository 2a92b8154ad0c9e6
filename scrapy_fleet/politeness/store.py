"""Politeness state in the crawl's Redis, next to the frontier's (one client, one namespace).

The frontier already spaces the *leases* of a download slot (``nextok``, ``slotdelay``,
``delayed``); the scripts here add what the downloader side needs:

- RESERVE: a turn in a slot for a download that was not leased by POP (robots.txt, a
  request held back while its host's robots.txt was fetched): the caller waits until the
  returned time, and the slot's next lease moves one delay past it.
- BACKOFF: a 429/503 pauses the slot for every worker; repeats double the pause.
- ADAPT: fleet-wide AutoThrottle: the slot's delay follows the observed latency.
- CRAWL_DELAY, ROBOTS_PUT, ROBOTS_GET: robots.txt once for the fleet, its Crawl-delay
  applied when it is stored and again whenever it is read after the slot's state went.
- PRUNE: what a finished host no longer needs goes after FLEET_HOST_STATE_TTL, a slice of
  one hash at a time, so that a broad crawl's per-host state does not grow without end.

Every script runs on the frontier's six common keys (see ``scrapy_fleet.frontier.scripts``)
so it can move a slot between ``ready`` and ``delayed`` exactly as the frontier does.
Time is Redis server time.

A ``robots`` entry is ``"<status> <stored ms> <crawl delay> <slot>\\n<rules>"``: status is
the HTTP status, ``-`` when there are no rules (allow all), or ``!<why>`` when the host
could not be reached at all (``!dns``, ``!refused``, ``!connect-timeout``, ``!no-route``:
no rules, and its pages fail at once, see :mod:`.robots`); crawl delay is in ms, ``-``
for none, ``skip`` for a host above FLEET_MAX_CRAWL_DELAY; slot is the download slot whose
delay it sets. Entries of older versions (``"<status>\\n<body>"``) are still read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from scrapy_fleet.frontier.keys import PartitionKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.frontier.scripts import PRELUDE

# Shared by the robots.txt scripts. KEYS[7] and up differ per script: the helpers take keys.
HELPERS = r"""
-- A Crawl-delay (ms) becomes the slot's delay floor for every worker; d < 0: the host is
-- skipped (its requests are dropped without a download, so let them drain at once).
-- The turn already granted was spaced by the old delay: its successor moves out by the
-- difference, so the request after robots.txt keeps the new delay too. Without a granted
-- turn to go by (no delay so far, or the slot's state was pruned), the next one is a
-- whole Crawl-delay from now.
local function apply_crawl_delay(slot, d, default, slotdelay_key, crawldelay_key)
  if d < 0 then
    redis.call('HSET', slotdelay_key, slot, 0)
    return
  end
  redis.call('HSET', crawldelay_key, slot, d)
  local cur = tonumber(redis.call('HGET', slotdelay_key, slot) or default)
  if cur >= d then return end
  redis.call('HSET', slotdelay_key, slot, d)
  local ok = redis.call('HGET', K.nextok, slot)
  local next_ok
  if ok and cur > 0 then
    next_ok = tonumber(ok) + d - cur
  else
    next_ok = math.max(tonumber(ok or '0'), now_ms() + d)
  end
  redis.call('HSET', K.nextok, slot, string.format('%d', next_ok))
  park(slot)
end

-- The header of a robots entry: stored ms, crawl delay field, slot (nil for old entries).
local function robots_header(entry)
  local eol = string.find(entry, '\n', 1, true) or (#entry + 1)
  local _, stored, cd, slot = string.match(string.sub(entry, 1, eol - 1), '^(%S+) (%d+) (%S+) (.*)$')
  return tonumber(stored), cd, slot
end
"""

# A turn in a slot for a download not leased by POP.
# KEYS[7] slotdelay   ARGV[3] default delay ms  ARGV[4] slot
# Returns ms to wait before downloading (0: go now).
RESERVE = PRELUDE + r"""
local now = now_ms()
local slot = ARGV[4]
local d = tonumber(redis.call('HGET', KEYS[7], slot) or ARGV[3])
local at = math.max(now, tonumber(redis.call('HGET', K.nextok, slot) or '0'))
if d > 0 or at > now then
  redis.call('HSET', K.nextok, slot, at + d)
  park(slot)
end
return at - now
"""

# A 429/503 from a slot: pause it for everyone. Responses that arrive while the slot is
# already paused (requests sent before the pause) only lengthen the pause; one arriving
# after the pause ended doubles it; one long after (FLEET_BACKOFF_MAX) starts over.
# KEYS[7] backoff   ARGV[3] slot  ARGV[4] Retry-After ms (-1: none)  ARGV[5] base ms
# ARGV[6] max ms.  Returns {consecutive 429/503s, pause ms from now}.
BACKOFF = PRELUDE + r"""
local now = now_ms()
local slot, ra, base, cap = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n, until_ms = 0, 0
local entry = redis.call('HGET', KEYS[7], slot)
if entry then
  local sp = string.find(entry, ' ', 1, true)
  n, until_ms = tonumber(string.sub(entry, 1, sp - 1)), tonumber(string.sub(entry, sp + 1))
  if now > until_ms + cap then n = 0 end
end
if n == 0 or now >= until_ms then n = n + 1 end
local pause = math.min(cap, math.max(ra, base * 2 ^ (n - 1)))
local new_until = math.max(until_ms, now + pause)
redis.call('HSET', KEYS[7], slot, n .. ' ' .. string.format('%d', new_until))
if tonumber(redis.call('HGET', K.nextok, slot) or '0') < new_until then
  redis.call('HSET', K.nextok, slot, string.format('%d', new_until))
end
park(slot)
redis.call('HINCRBY', K.stats, 'politeness/backoff', 1)
return {n, new_until - now}
"""

# Fleet-wide AutoThrottle: the slot's delay moves halfway to latency / target concurrency,
# within [max(DOWNLOAD_DELAY, Crawl-delay), AUTOTHROTTLE_MAX_DELAY]; a non-200 response
# may only raise it (AutoThrottle's rules, with the state in Redis).
# KEYS[7] slotdelay  KEYS[8] crawldelay
# ARGV[3] slot  ARGV[4] latency ms  ARGV[5] start ms  ARGV[6] min ms  ARGV[7] max ms
# ARGV[8] target concurrency  ARGV[9] status.   Returns the slot's delay in ms.
ADAPT = PRELUDE + r"""
local slot = ARGV[3]
local cur = tonumber(redis.call('HGET', KEYS[7], slot) or ARGV[5])
local target = tonumber(ARGV[4]) / tonumber(ARGV[8])
local new = math.max(target, (cur + target) / 2)
local floor = math.max(tonumber(ARGV[6]), tonumber(redis.call('HGET', KEYS[8], slot) or '0'))
new = math.max(floor, math.min(new, tonumber(ARGV[7])))
if ARGV[9] ~= '200' and new <= cur then return math.floor(cur) end
new = math.floor(new)
redis.call('HSET', KEYS[7], slot, new)
return new
"""

# Crawl-delay from robots.txt: the slot's delay becomes at least this, for every worker.
# The turn already granted was spaced by the old delay: its successor moves out by the
# difference, so the request after robots.txt keeps the new delay too.
# KEYS[7] slotdelay  KEYS[8] crawldelay
# ARGV[3] slot  ARGV[4] delay ms (-1: skipped host)  ARGV[5] default delay ms
CRAWL_DELAY = PRELUDE + HELPERS + r"""
local d = tonumber(ARGV[4])
apply_crawl_delay(ARGV[3], d, tonumber(ARGV[5]), KEYS[7], KEYS[8])
if d < 0 then redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_skipped_hosts', 1) end
redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_hosts', 1)
return 1
"""

# Store a host's robots.txt for the fleet, apply its Crawl-delay, release the fetch lock.
# KEYS[7] robots  KEYS[8] slotdelay  KEYS[9] crawldelay  KEYS[10] robotslock:<netloc>
# ARGV[3] netloc  ARGV[4] status ("-": no rules)  ARGV[5] crawl delay ms, "-" or "skip"
# ARGV[6] slot  ARGV[7] rules  ARGV[8] default delay ms  ARGV[9] "1": the rules were cut
# Returns the stored entry.
ROBOTS_PUT = PRELUDE + HELPERS + r"""
local cd, slot = ARGV[5], ARGV[6]
if cd ~= '-' then
  apply_crawl_delay(slot, cd == 'skip' and -1 or tonumber(cd), tonumber(ARGV[8]), KEYS[8], KEYS[9])
  redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_hosts', 1)
  if cd == 'skip' then redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_skipped_hosts', 1) end
end
local entry = ARGV[4] .. ' ' .. string.format('%d', now_ms()) .. ' ' .. cd .. ' ' .. slot .. '\n' .. ARGV[7]
redis.call('HSET', KEYS[7], ARGV[3], entry)
redis.call('DEL', KEYS[10])
redis.call('HINCRBY', K.stats, 'politeness/robots_fetched', 1)
if ARGV[9] == '1' then redis.call('HINCRBY', K.stats, 'politeness/robots_truncated', 1) end
return entry
"""

# Read a host's robots.txt. If its slot lost its Crawl-delay meanwhile (PRUNE dropped a
# finished slot's state while this entry stayed), apply it again: a worker whose local
# copy expired reads through here, so the host never goes faster than it asked.
# KEYS[7] robots  KEYS[8] slotdelay  KEYS[9] crawldelay   ARGV[3] netloc
# ARGV[4] default delay ms.   Returns the entry, or nil.
ROBOTS_GET = PRELUDE + HELPERS + r"""
local entry = redis.call('HGET', KEYS[7], ARGV[3])
if not entry then return false end
local _, cd, slot = robots_header(entry)
if cd == 'skip' then
  if redis.call('HEXISTS', KEYS[8], slot) == 0 then redis.call('HSET', KEYS[8], slot, 0) end
elseif cd and cd ~= '-' and redis.call('HEXISTS', KEYS[9], slot) == 0 then
  apply_crawl_delay(slot, tonumber(cd), tonumber(ARGV[4]), KEYS[8], KEYS[9])
end
return entry
"""

# Forget what finished hosts no longer need: one HSCAN slice of one hash per call, so
# Redis is never held for long. A slot is finished when nothing of it is queued, leased
# or scheduled, its last turn (nextok) was over the TTL ago, and so was the end of any
# 429/503 pause (and over FLEET_BACKOFF_MAX ago, so a new one would not count as a repeat
# anyway). A finished slot loses its nextok, backoff, crawldelay and slotdelay (unless
# DOWNLOAD_SLOTS sets it). A robots.txt entry goes when its slot is finished and it was
# fetched over the TTL ago. A host that comes back fetches robots.txt again (once, under
# the lock), and ROBOTS_PUT applies its Crawl-delay again; a worker that still had the
# rules re-reads them within a quarter of the TTL, through ROBOTS_GET.
# KEYS[7] robots  KEYS[8] slotdelay  KEYS[9] crawldelay  KEYS[10] backoff
# ARGV[3] hash to walk: robots, nextok, slotdelay, crawldelay or backoff
# ARGV[4] HSCAN cursor  ARGV[5] HSCAN COUNT  ARGV[6] TTL ms  ARGV[7] FLEET_BACKOFF_MAX ms
# ARGV[8..] slots whose slotdelay DOWNLOAD_SLOTS sets (kept)
# Returns {next cursor ("0": the walk is over), slots pruned, robots.txt entries pruned}.
PRUNE = PRELUDE + HELPERS + r"""
local now = now_ms()
local which, ttl, bmax = ARGV[3], tonumber(ARGV[6]), tonumber(ARGV[7])
local walked = ({robots = KEYS[7], nextok = K.nextok, slotdelay = KEYS[8],
                 crawldelay = KEYS[9], backoff = KEYS[10]})[which]
local keep = {}
for i = 8, #ARGV do keep[ARGV[i]] = true end

local function finished(slot)
  if redis.call('HEXISTS', K.heads, slot) == 1 or redis.call('HEXISTS', K.inflight, slot) == 1
      or redis.call('ZSCORE', K.ready, slot) or redis.call('ZSCORE', K.delayed, slot) then
    return false
  end
  if tonumber(redis.call('HGET', K.nextok, slot) or '0') > now - ttl then return false end
  local pause = redis.call('HGET', KEYS[10], slot)
  if pause then
    local until_ms = tonumber(string.sub(pause, string.find(pause, ' ', 1, true) + 1))
    if until_ms > now - math.max(ttl, bmax) then return false end
  end
  return true
end

local function drop(slot)
  local n = redis.call('HDEL', K.nextok, slot) + redis.call('HDEL', KEYS[10], slot)
      + redis.call('HDEL', KEYS[9], slot)
  if not keep[slot] then n = n + redis.call('HDEL', KEYS[8], slot) end
  return n > 0 and 1 or 0
end

local scan = redis.call('HSCAN', walked, ARGV[4], 'COUNT', tonumber(ARGV[5]))
local fields = scan[2]
local slots, robots = 0, 0
for i = 1, #fields, 2 do
  local field = fields[i]
  if which == 'robots' then
    local stored, _, slot = robots_header(fields[i + 1])
    if not slot then  -- an entry of an older version: its host, fetched at some point
      slot = string.lower(string.match(field, '^%[(.*)%]') or string.match(field, '^(.*):%d+$') or field)
      stored = 0
    end
    if stored <= now - ttl and finished(slot) then
      robots = robots + redis.call('HDEL', KEYS[7], field)
      slots = slots + drop(slot)
    end
  elseif finished(field) then
    slots = slots + drop(field)
  end
end
if slots > 0 then redis.call('HINCRBY', K.stats, 'politeness/hosts_pruned', slots) end
if robots > 0 then redis.call('HINCRBY', K.stats, 'politeness/robots_pruned', robots) end
return {scan[1], slots, robots}
"""

# Per-slot delays from Scrapy's DOWNLOAD_SLOTS setting, for the whole fleet (never below
# a Crawl-delay already known).   KEYS[7] slotdelay  KEYS[8] crawldelay
# ARGV[3..] pairs: slot, delay ms.
SLOT_DELAYS = PRELUDE + r"""
for i = 3, #ARGV, 2 do
  local floor = tonumber(redis.call('HGET', KEYS[8], ARGV[i]) or '0')
  redis.call('HSET', KEYS[7], ARGV[i], math.max(floor, tonumber(ARGV[i + 1])))
end
return 1
"""

T = TypeVar("T")


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except ValueError:  # junk: another tool's
        return 0
_STORES: weakref.WeakKeyDictionary[RedisFrontier, PolitenessStore] = weakref.WeakKeyDictionary()


class PolitenessStore:
    """Politeness operations on a frontier's Redis, retried like the frontier's own.

    ``wait`` as in ``RedisFrontier.call``: a store made directly (tools, tests, threads
    without a reactor) sleeps between attempts while Redis is away; the one the
    middlewares share, :meth:`of`, never does (see :mod:`.outage`).
    """

    def __init__(self, frontier: RedisFrontier, *, wait: bool = True) -> None:
        self.frontier = frontier
        self.keys = frontier.keys
        self.wait = wait
        frontier.add_scripts({"RESERVE": RESERVE, "BACKOFF": BACKOFF, "ADAPT": ADAPT,
                              "CRAWL_DELAY": CRAWL_DELAY, "SLOT_DELAYS": SLOT_DELAYS,
                              "ROBOTS_PUT": ROBOTS_PUT, "ROBOTS_GET": ROBOTS_GET, "PRUNE": PRUNE})

    @classmethod
    def of(cls, frontier: RedisFrontier) -> PolitenessStore:
        """The store of the crawl's middlewares, on the reactor thread: a call made while
        Redis is away raises RedisRetryLater at once (past the deadline RedisUnavailable
        or RedisOutOfMemory) instead of sleeping."""
        store = _STORES.get(frontier)
        if store is None:
            store = _STORES[frontier] = cls(frontier, wait=False)
        return store

    def _call(self, operation: Callable[[], T], what: str) -> T:
        return self.frontier.call(operation, what, wait=self.wait)

    def _run(self, name: str, keys: list[str], args: list[Any], what: str,
             part: PartitionKeys) -> Any:
        return self.frontier.run_script(name, keys, args, what, wait=self.wait, part=part)

    def _part(self, slot: str) -> PartitionKeys:
        """The partition of ``slot``: its queue and politeness state live there."""
        return self.frontier.part_of(slot)

    # --- turns and pauses -----------------------------------------------------------

    def reserve(self, slot: str) -> float:
        """Take the slot's next turn; returns the seconds to wait for it."""
        p = self._part(slot)
        ms = self._run("RESERVE", [p.slot_delay], [self.frontier.delay_ms, slot],
                       "reserve a turn in a download slot", p)
        return int(ms) / 1000

    def backoff(self, slot: str, retry_after: float | None, base: float, cap: float) -> tuple[int, float]:
        """Pause the slot after a 429/503; returns (consecutive count, pause seconds)."""
        p = self._part(slot)
        n, ms = self._run(
            "BACKOFF", [p.backoff],
            [slot, -1 if retry_after is None else int(retry_after * 1000), int(base * 1000),
             int(cap * 1000)],
            "back off a download slot", p,
        )
        return int(n), int(ms) / 1000

    def reset_backoff(self, slot: str) -> None:
        self._call(lambda: self.frontier.client.hdel(self._part(slot).backoff, slot),
                   "reset a slot's backoff")

    def adapt(self, slot: str, latency: float, status: int, *, start: float, minimum: float,
              maximum: float, target_concurrency: float) -> float:
        p = self._part(slot)
        ms = self._run(
            "ADAPT", [p.slot_delay, p.crawl_delay],
            [slot, int(latency * 1000), int(start * 1000), int(minimum * 1000),
             int(maximum * 1000), target_concurrency, status],
            "adapt a slot's delay", p,
        )
        return int(ms) / 1000

    def slot_delay(self, slot: str) -> float:
        raw = self._call(lambda: self.frontier.client.hget(self._part(slot).slot_delay, slot),
                         "read a slot's delay")
        return (int(raw) if raw is not None else self.frontier.delay_ms) / 1000

    def set_crawl_delay(self, slot: str, seconds: float | None) -> None:
        """Honour a Crawl-delay fleet-wide (None: the host is skipped)."""
        p = self._part(slot)
        self._run(
            "CRAWL_DELAY", [p.slot_delay, p.crawl_delay],
            [slot, -1 if seconds is None else int(seconds * 1000), self.frontier.delay_ms],
            "record a Crawl-delay", p,
        )

    def set_slot_delays(self, delays: dict[str, float]) -> None:
        """DOWNLOAD_SLOTS delays, held fleet-wide like DOWNLOAD_DELAY."""
        groups: dict[int, list[Any]] = {}
        for slot, seconds in delays.items():
            groups.setdefault(self._part(slot).index, []).extend([slot, int(seconds * 1000)])
        for i, args in groups.items():
            p = self.frontier.parts[i]
            self._run("SLOT_DELAYS", [p.slot_delay, p.crawl_delay], args,
                      "record DOWNLOAD_SLOTS delays", p)

    # --- the robots.txt cache -------------------------------------------------------

    # a host's robots.txt is kept in the partition of the slot it sets the Crawl-delay of
    # (``slot``, the download slot of the host's requests; the netloc by default)

    def robots_get(self, netloc: str, slot: str | None = None) -> bytes | None:
        """The stored entry (see the module doc), its Crawl-delay re-applied if it went."""
        p = self._part(slot or netloc)
        return self._run("ROBOTS_GET", [p.robots, p.slot_delay, p.crawl_delay],
                         [netloc, self.frontier.delay_ms], "read robots.txt", p)

    def robots_lock(self, netloc: str, owner: str, ttl: float, slot: str | None = None) -> bool:
        key = self._part(slot or netloc).robots_lock_prefix + netloc
        return bool(self._call(
            lambda: self.frontier.client.set(key, owner, nx=True, px=max(1, int(ttl * 1000))),
            "lock a robots.txt fetch",
        ))

    def robots_lock_renew(self, netloc: str, ttl: float, slot: str | None = None) -> None:
        key = self._part(slot or netloc).robots_lock_prefix + netloc
        self._call(lambda: self.frontier.client.pexpire(key, max(1, int(ttl * 1000))),
                   "renew a robots.txt lock")

    def robots_put(self, netloc: str, slot: str, rules: bytes | None, *, status: int = 200,
                   crawl_delay: float | None = None, skipped: bool = False,
                   truncated: bool = False, unreachable: str | None = None) -> bytes:
        """Store a host's robots.txt for the fleet (None: no rules; ``unreachable``: why
        the host could not be reached at all), apply its Crawl-delay (``skipped``: above
        FLEET_MAX_CRAWL_DELAY) and release the fetch lock."""
        delay = "skip" if skipped else "-" if crawl_delay is None else int(crawl_delay * 1000)
        p = self._part(slot)
        return self._run(
            "ROBOTS_PUT",
            [p.robots, p.slot_delay, p.crawl_delay, p.robots_lock_prefix + netloc],
            [netloc, f"!{unreachable}" if unreachable else status if rules is not None else "-",
             delay, slot, rules or b"",
             self.frontier.delay_ms, "1" if truncated else "0"],
            "store robots.txt", p,
        )

    # --- forgetting finished hosts --------------------------------------------------

    def prune(self, which: str, cursor: bytes | str, count: int, ttl: float, backoff_max: float,
              keep_slots: list[str], partition: int = 0) -> tuple[bytes, int, int]:
        """One PRUNE slice of hash ``which`` of a partition: (next cursor, slots pruned,
        robots.txt pruned)."""
        p = self.frontier.parts[partition]
        cursor, slots, robots = self._run(
            "PRUNE",
            [p.robots, p.slot_delay, p.crawl_delay, p.backoff],
            [which, cursor, count, int(ttl * 1000), int(backoff_max * 1000), *keep_slots],
            "forget finished hosts", p,
        )
        return cursor, int(slots), int(robots)

    def incr(self, field: str, amount: int = 1) -> None:
        self._call(lambda: self.frontier.client.hincrby(self.keys.stats, field, amount),
                   "count a politeness event")

    def counters(self, fields: list[str]) -> list[int]:
        """Crawl-wide counters: the control keys' and every partition's, added up."""
        keys = list(dict.fromkeys([self.keys.stats, *(p.stats for p in self.frontier.parts)]))

        def run() -> list[Any]:
            pipe = self.frontier.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            return pipe.execute()

        rows = self._call(run, "read counters")
        return [sum(_count(row[n]) for row in rows) for n in range(len(fields))]
