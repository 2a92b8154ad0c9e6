"""Download slots on the fleet: the delay is Redis's business, not each process's.

The frontier leases a slot's requests at most one per delay for the whole fleet. Scrapy's
downloader would apply DOWNLOAD_DELAY (randomized 0.5x-1.5x) once more, per process, on
top: that slows the fleet, and worse, lets two arrivals from different workers come closer
than the delay (worker A's request waits locally, worker B's does not). So on the fleet the
local slot delay is 0 and a leased request is downloaded as soon as it reaches the
downloader.

Downloads the frontier did not lease (robots.txt, anything a spider fetches with
``engine.download_async``, a leased request held back while robots.txt was fetched) take
a turn in their slot (RESERVE) and wait for it, so they are spaced like the rest.

With FLEET_AUTOTHROTTLE, every response's latency moves the slot's shared delay the way
Scrapy's AutoThrottle moves its per-process one (the stock extension is disabled by the
add-on: it would act per process again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy.utils.asyncio import sleep

from scrapy_fleet.frontier import codec
from scrapy_fleet.politeness import frontier_of, slot_key
from scrapy_fleet.politeness.config import PolitenessConfig
from scrapy_fleet.politeness.outage import AWAY, RedisAway, call_async, skipped, unfinished_if_away
from scrapy_fleet.politeness.prune import HostStatePruner
from scrapy_fleet.politeness.store import PolitenessStore
from scrapy_fleet.scrapy_internals import clear_local_delay, local_slot

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from typing_extensions import Self

logger = logging.getLogger(__name__)

# meta flag: this request must take a fresh turn in its slot before it is downloaded
RESERVE_META_KEY = "_fleet_reserve"


class FleetSlotsMiddleware:
    """Downloader middleware: local delay 0, turns for unleased downloads, adaptive delay."""

    def __init__(self, crawler: Crawler, config: PolitenessConfig) -> None:
        self.crawler = crawler
        self.config = config
        self._store: PolitenessStore | None = None
        self._pruner: HostStatePruner | None = None
        crawler.signals.connect(self._reached_downloader, signal=signals.request_reached_downloader)
        if config.autothrottle:
            crawler.signals.connect(self._response_downloaded, signal=signals.response_downloaded)
        # the frontier is open by then: in adaptive mode, its default delay is set at once
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self._scheduler_closing, signal=signals.spider_idle)
        crawler.signals.connect(self._scheduler_closing, signal=signals.spider_closed)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, PolitenessConfig.from_settings(crawler.settings))

    def store(self) -> PolitenessStore | None:
        frontier = frontier_of(self.crawler)
        if frontier is None:
            return None
        if self._store is None or self._store.frontier is not frontier:
            self._store = PolitenessStore.of(frontier)
            if self.config.autothrottle:
                # slots without a delay of their own yet start at AUTOTHROTTLE_START_DELAY
                frontier.delay_ms = int(
                    1000 * max(self.config.autothrottle_start_delay, self.config.download_delay)
                )
        return self._store

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if not (request.meta.pop(RESERVE_META_KEY, False) or codec.LEASE_META_KEY not in request.meta):
            return None
        # a worker stopping on a fault no longer offers its frontier; a request already on
        # its way still takes its turn, or is not downloaded (call_async: RedisAway)
        store = self.store() or self._store
        if store is None:
            return None
        slot = slot_key(self.crawler, request)
        with unfinished_if_away(request):
            # no turn, no download: while Redis is away the request waits here
            wait = await call_async(self.crawler, lambda: store.reserve(slot),
                                    "reserve a turn in a download slot")
        if wait > 0:
            self.crawler.stats.inc_value("fleet/politeness/held")
            logger.debug("Waiting %.2f s for a turn in slot %s: %s", wait, slot, request)
            await sleep(wait)
        return None

    async def _spider_opened(self, spider: Spider | None = None) -> None:
        store = self.store()
        if store is None:
            return
        # DOWNLOAD_SLOTS delays: the local ones are set to 0 like the rest, so the fleet
        # holds them instead (their concurrency stays per process)
        delays = {
            slot: float(conf["delay"])
            for slot, conf in self.crawler.settings.getdict("DOWNLOAD_SLOTS").items()
            if isinstance(conf, dict) and conf.get("delay") is not None
        }
        if delays:
            try:
                # awaited before the engine starts, so before any lease: a slot leased
                # before its delay is in Redis would go at DOWNLOAD_DELAY
                await call_async(self.crawler, lambda: store.set_slot_delays(delays),
                                 "record DOWNLOAD_SLOTS delays")
            except RedisAway:
                return  # the worker is stopping
        if self.config.host_state_ttl > 0:
            # every worker walks the per-host hashes; a walk costs a few ms of Redis time
            self._pruner = HostStatePruner(store, self.config, sorted(delays), self.crawler.stats)
            self._pruner.start()

    def _spider_closed(self, spider: Spider | None = None, reason: str | None = None) -> None:
        if self._pruner is not None:
            self._pruner.stop()
            self._pruner = None

    def _scheduler_closing(self, spider: Spider | None = None, reason: str | None = None) -> None:
        """Copy the crawl-wide politeness counters into this worker's stats."""
        store = self.store()
        if store is None:
            return
        fields = ("delayed", "backoff", "crawl_delay_hosts", "crawl_delay_skipped_hosts",
                  "robots_fetched", "robots_truncated", "hosts_pruned", "robots_pruned")
        try:
            values = store.counters([f"politeness/{f}" for f in fields])
        except AWAY as exc:  # the counters stay in Redis; the next idle turn copies them
            skipped(self.crawler.stats, "counters", exc)
            return
        for field, value in zip(fields, values):
            self.crawler.stats.set_value(f"fleet/crawl/politeness/{field}", value)
        # held back by politeness: a crawl-wide count by nature (the frontier decides)
        self.crawler.stats.set_value("fleet/politeness/delayed", values[0])

    def _reached_downloader(self, request: Request, spider: Spider | None = None) -> None:
        if frontier_of(self.crawler) is None:
            return
        # the downloader has just put the request in its slot (meta download_slot)
        slot = local_slot(self.crawler.engine.downloader, request.meta.get("download_slot", ""))
        if slot is not None:
            clear_local_delay(slot)

    def _response_downloaded(self, response: Response, request: Request, spider: Spider | None = None) -> None:
        latency = request.meta.get("download_latency")
        if latency is None or request.meta.get("autothrottle_dont_adjust_delay"):
            return
        store = self.store()
        if store is None:
            return
        c = self.config
        slot = slot_key(self.crawler, request)
        try:
            delay = store.adapt(
                slot, float(latency), response.status,
                start=max(c.autothrottle_start_delay, c.download_delay), minimum=c.download_delay,
                maximum=c.autothrottle_max_delay, target_concurrency=c.autothrottle_target_concurrency,
            )
        except AWAY as exc:
            # a sync signal: nothing can wait here. The slot keeps its delay, and the next
            # response moves it (one observation of the latency is lost)
            skipped(self.crawler.stats, "adaptive delay", exc)
            return
        logger.debug("slot %s: latency %.3f s, status %d -> fleet-wide delay %.3f s",
                     slot, latency, response.status, delay)
