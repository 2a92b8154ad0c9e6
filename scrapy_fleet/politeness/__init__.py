"""Politeness that holds across every worker process and machine (issue #5).

The frontier spaces the leases of each download slot by its delay and caps the slot's
requests in flight fleet-wide (scrapy_fleet/frontier). This package adds the rest:

- :mod:`.slots`: the local downloader no longer applies DOWNLOAD_DELAY on top (it would
  slow the fleet and let two workers' requests arrive closer than the delay); downloads
  not leased by the frontier (robots.txt) take a turn in their slot; optional fleet-wide
  AutoThrottle (FLEET_AUTOTHROTTLE).
- :mod:`.robots`: robots.txt fetched once per host for the whole fleet, its Crawl-delay
  honoured by every worker (hosts above FLEET_MAX_CRAWL_DELAY skipped); only the groups
  for the crawl's user agents are stored (:mod:`.robotstxt`).
- :mod:`.backoff`: 429/503 (Retry-After in seconds or as an HTTP date) pause the host for
  every worker, with exponential backoff on repeats.
- :mod:`.prune`: a finished host's state leaves Redis after FLEET_HOST_STATE_TTL, so a
  broad crawl's per-host state does not grow without end (started by :mod:`.slots`).
- :mod:`.outage`: while Redis is away none of them sleeps on the reactor thread: a
  request waits for what it needs, the rest waits for its next turn (issue 9).

The add-on (scrapy_fleet/addon.py) enables all three middlewares. docs/politeness.md has the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_fleet.frontier.scheduler import FleetScheduler, slot_of

__all__ = ["frontier_of", "slot_key"]

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from scrapy_fleet.frontier.queue import RedisFrontier


def frontier_of(crawler: Crawler) -> RedisFrontier | None:
    """The crawl's shared frontier, if this crawler runs on one (and it is open)."""
    scheduler = FleetScheduler.of(crawler)
    if scheduler is None or scheduler.fatal is not None:
        return None
    return scheduler.frontier


def slot_key(crawler: Crawler, request: Request) -> str:
    """The request's download slot as this process's downloader keys it: meta
    ``download_slot``, else the hostname, or its IP address with CONCURRENT_REQUESTS_PER_IP
    once resolved (Scrapy's DNS cache). The slot's delay, pause and turns in Redis are
    kept under this key, the same the frontier queues the request under."""
    return slot_of(request, crawler)
