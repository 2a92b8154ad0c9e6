"""Politeness state in the crawl's Redis, next to the frontier's (one client, one namespace).

The frontier already spaces the *leases* of a download slot (``nextok``, ``slotdelay``,
``delayed``); the scripts here add what the downloader side needs:

- RESERVE: a turn in a slot for a download that was not leased by POP (robots.txt, a
  request held back while its host's robots.txt was fetched): the caller waits until the
  returned time, and the slot's next lease moves one delay past it.
- BACKOFF: a 429/503 pauses the slot for every worker; repeats double the pause.
- ADAPT: fleet-wide AutoThrottle: the slot's delay follows the observed latency.

Every script runs on the frontier's six common keys (see ``scrapy_fleet.frontier.scripts``)
so it can move a slot between ``ready`` and ``delayed`` exactly as the frontier does.
Time is Redis server time.
"""

from __future__ import annotations

import weakref
from typing import Any

from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.frontier.scripts import PRELUDE

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
CRAWL_DELAY = PRELUDE + r"""
local slot, d = ARGV[3], tonumber(ARGV[4])
if d < 0 then
  -- skipped: its requests are dropped without a download, so let them drain at once
  redis.call('HSET', KEYS[7], slot, 0)
  redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_skipped_hosts', 1)
else
  redis.call('HSET', KEYS[8], slot, d)
  local cur = tonumber(redis.call('HGET', KEYS[7], slot) or ARGV[5])
  if cur < d then
    redis.call('HSET', KEYS[7], slot, d)
    local ok = redis.call('HGET', K.nextok, slot)
    if ok then
      redis.call('HSET', K.nextok, slot, string.format('%d', tonumber(ok) + d - cur))
      park(slot)
    end
  end
end
redis.call('HINCRBY', K.stats, 'politeness/crawl_delay_hosts', 1)
return 1
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

_STORES: weakref.WeakKeyDictionary[RedisFrontier, PolitenessStore] = weakref.WeakKeyDictionary()


class PolitenessStore:
    """Politeness operations on a frontier's Redis, retried like the frontier's own."""

    def __init__(self, frontier: RedisFrontier) -> None:
        self.frontier = frontier
        self.keys = frontier.keys
        frontier.add_scripts({"RESERVE": RESERVE, "BACKOFF": BACKOFF, "ADAPT": ADAPT,
                              "CRAWL_DELAY": CRAWL_DELAY, "SLOT_DELAYS": SLOT_DELAYS})

    @classmethod
    def of(cls, frontier: RedisFrontier) -> PolitenessStore:
        store = _STORES.get(frontier)
        if store is None:
            store = _STORES[frontier] = cls(frontier)
        return store

    def _run(self, name: str, keys: list[str], args: list[Any], what: str) -> Any:
        return self.frontier.run_script(name, keys, args, what)

    # --- turns and pauses -----------------------------------------------------------

    def reserve(self, slot: str) -> float:
        """Take the slot's next turn; returns the seconds to wait for it."""
        ms = self._run("RESERVE", [self.keys.slot_delay], [self.frontier.delay_ms, slot],
                       "reserve a turn in a download slot")
        return int(ms) / 1000

    def backoff(self, slot: str, retry_after: float | None, base: float, cap: float) -> tuple[int, float]:
        """Pause the slot after a 429/503; returns (consecutive count, pause seconds)."""
        n, ms = self._run(
            "BACKOFF", [self.keys.backoff],
            [slot, -1 if retry_after is None else int(retry_after * 1000), int(base * 1000),
             int(cap * 1000)],
            "back off a download slot",
        )
        return int(n), int(ms) / 1000

    def reset_backoff(self, slot: str) -> None:
        self.frontier.call(lambda: self.frontier.client.hdel(self.keys.backoff, slot),
                           "reset a slot's backoff")

    def adapt(self, slot: str, latency: float, status: int, *, start: float, minimum: float,
              maximum: float, target_concurrency: float) -> float:
        ms = self._run(
            "ADAPT", [self.keys.slot_delay, self.keys.crawl_delay],
            [slot, int(latency * 1000), int(start * 1000), int(minimum * 1000),
             int(maximum * 1000), target_concurrency, status],
            "adapt a slot's delay",
        )
        return int(ms) / 1000

    def slot_delay(self, slot: str) -> float:
        raw = self.frontier.call(lambda: self.frontier.client.hget(self.keys.slot_delay, slot),
                                 "read a slot's delay")
        return (int(raw) if raw is not None else self.frontier.delay_ms) / 1000

    def set_crawl_delay(self, slot: str, seconds: float | None) -> None:
        """Honour a Crawl-delay fleet-wide (None: the host is skipped)."""
        self._run(
            "CRAWL_DELAY", [self.keys.slot_delay, self.keys.crawl_delay],
            [slot, -1 if seconds is None else int(seconds * 1000), self.frontier.delay_ms],
            "record a Crawl-delay",
        )

    def set_slot_delays(self, delays: dict[str, float]) -> None:
        """DOWNLOAD_SLOTS delays, held fleet-wide like DOWNLOAD_DELAY."""
        args: list[Any] = []
        for slot, seconds in delays.items():
            args += [slot, int(seconds * 1000)]
        if args:
            self._run("SLOT_DELAYS", [self.keys.slot_delay, self.keys.crawl_delay], args,
                      "record DOWNLOAD_SLOTS delays")

    # --- the robots.txt cache -------------------------------------------------------

    def robots_get(self, netloc: str) -> bytes | None:
        return self.frontier.call(lambda: self.frontier.client.hget(self.keys.robots, netloc),
                                  "read robots.txt")

    def robots_lock(self, netloc: str, owner: str, ttl: float) -> bool:
        key = self.keys.robots_lock_prefix + netloc
        return bool(self.frontier.call(
            lambda: self.frontier.client.set(key, owner, nx=True, px=max(1, int(ttl * 1000))),
            "lock a robots.txt fetch",
        ))

    def robots_lock_renew(self, netloc: str, ttl: float) -> None:
        key = self.keys.robots_lock_prefix + netloc
        self.frontier.call(lambda: self.frontier.client.pexpire(key, max(1, int(ttl * 1000))),
                           "renew a robots.txt lock")

    def robots_put(self, netloc: str, value: bytes) -> None:
        def run() -> None:
            pipe = self.frontier.client.pipeline(transaction=True)
            pipe.hset(self.keys.robots, netloc, value)
            pipe.delete(self.keys.robots_lock_prefix + netloc)
            pipe.hincrby(self.keys.stats, "politeness/robots_fetched", 1)
            pipe.execute()

        self.frontier.call(run, "store robots.txt")

    def incr(self, field: str, amount: int = 1) -> None:
        self.frontier.call(lambda: self.frontier.client.hincrby(self.keys.stats, field, amount),
                           "count a politeness event")

    def counters(self, fields: list[str]) -> list[int]:
        raw = self.frontier.call(lambda: self.frontier.client.hmget(self.keys.stats, fields),
                                 "read counters")
        return [int(v or 0) for v in raw]
