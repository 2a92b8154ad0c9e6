"""Per-host state that a broad crawl would otherwise keep for ever, forgotten when done.

A crawl of a top-1M list touches a million hosts, and each leaves fields in ``nextok``,
``slotdelay``, ``crawldelay``, ``backoff`` and ``robots`` that nothing ever removed. Every
worker walks these hashes a slice at a time (PRUNE in :mod:`.store`: one HSCAN of a few
hundred fields per call), from a LoopingCall on the reactor, and drops the state of hosts
that are finished: nothing queued, leased or scheduled, and their last turn and any
pause over FLEET_HOST_STATE_TTL ago. A walk of all five hashes starts every quarter of
the TTL (at most every minute); while it lasts, each hash gets one slice per tick.

The politeness guarantees still hold for a host that comes back later: its robots.txt is
fetched again (once, under the fleet-wide lock), which applies its Crawl-delay again, and
the workers re-read the rules they keep in memory at least every quarter of the TTL
(:mod:`.robots`), so none of them goes on with rules whose Crawl-delay Redis forgot.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from twisted.internet import task

from scrapy_fleet.politeness.outage import AWAY, skipped

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_fleet.politeness.config import PolitenessConfig
    from scrapy_fleet.politeness.store import PolitenessStore

logger = logging.getLogger(__name__)

HASHES = ("robots", "nextok", "slotdelay", "crawldelay", "backoff")
SLICE = 200  # HSCAN COUNT per call: a few ms of Redis time at most
MAX_WALK_INTERVAL = 60.0  # seconds between walks when the TTL is long


def walk_interval(ttl: float) -> float:
    """How often a walk starts, and how long a worker keeps robots.txt rules in memory."""
    return min(ttl / 4, MAX_WALK_INTERVAL)


class HostStatePruner:
    def __init__(self, store: PolitenessStore, config: PolitenessConfig, keep_slots: list[str],
                 stats: StatsCollector | None = None) -> None:
        self.store = store
        self.ttl = config.host_state_ttl
        self.backoff_max = config.backoff_max
        self.keep_slots = keep_slots  # DOWNLOAD_SLOTS delays: set once, when a worker opens
        self.stats = stats
        self.interval = walk_interval(self.ttl)
        # (hash, partition) still to walk -> HSCAN cursor
        self._cursors: dict[tuple[str, int], bytes | str] = {}
        self._next_walk = 0.0  # time.monotonic() when the next walk may start
        self._loop: task.LoopingCall | None = None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.start(min(1.0, self.interval), now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> None:
        # a LoopingCall on the reactor: the store does not wait for Redis, so a tick while
        # it is away skips its turn (the walk resumes at its cursors on the next one)
        try:
            self.step()
        except AWAY as exc:
            skipped(self.stats, "prune", exc)
        except Exception as exc:  # a LoopingCall that raises stops for good
            logger.debug("could not prune per-host state: %s", exc)

    def _walk_start(self) -> dict[tuple[str, int], bytes | str]:
        """A cursor for each hash of each partition of the crawl."""
        return {(which, part): "0" for part in range(len(self.store.frontier.parts))
                for which in HASHES}

    def step(self) -> tuple[int, int]:
        """One slice of every hash in the current walk; starts a walk when one is due.
        Returns (slots pruned, robots.txt entries pruned)."""
        if not self._cursors:
            if time.monotonic() < self._next_walk:
                return 0, 0
            self._cursors = self._walk_start()
        slots = robots = 0
        for (which, part), cursor in list(self._cursors.items()):
            cursor, s, r = self.store.prune(which, cursor, SLICE, self.ttl, self.backoff_max,
                                            self.keep_slots, part)
            slots += s
            robots += r
            if cursor in (b"0", "0", 0):
                del self._cursors[which, part]
            else:
                self._cursors[which, part] = cursor
        if not self._cursors:
            self._next_walk = time.monotonic() + self.interval
        if self.stats is not None:
            if slots:
                self.stats.inc_value("fleet/politeness/hosts_pruned", slots)
            if robots:
                self.stats.inc_value("fleet/politeness/robots_pruned", robots)
        if slots or robots:
            logger.debug("forgot the state of %d finished slots and %d robots.txt", slots, robots)
        return slots, robots

    def walk(self) -> tuple[int, int]:
        """A whole walk now (tests, benchmarks): (slots pruned, robots.txt entries pruned)."""
        self._cursors = self._walk_start()
        slots = robots = 0
        while self._cursors:
            s, r = self.step()
            slots += s
            robots += r
        return slots, robots
