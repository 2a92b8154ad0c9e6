"""Feeding ``Spider.start()`` into the shared frontier, and telling other workers so.

While a worker feeds start requests, no other worker may decide the crawl is finished,
even if the queue is momentarily empty (the list may still be downloading). If start()
raises, the crawl is marked failed for every worker (a crawl that ends "finished" with
part of its start requests never fed would be a false success). With
``FLEET_SEED`` off (``scrapy fleet`` workers after the first), start() is not run at all:
the worker only takes requests from the frontier.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from scrapy import Request

from scrapy_fleet.frontier.scheduler import FleetScheduler
from scrapy.utils.asyncio import sleep

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

logger = logging.getLogger(__name__)

_FEED_SLICE = 64  # start() items fed between two turns of the reactor


class FleetStartMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_start(self, start: AsyncIterator[Any]) -> AsyncIterator[Any]:
        scheduler = FleetScheduler.of(self.crawler)
        if scheduler is None:  # not on the fleet frontier: plain Scrapy behaviour
            async for item_or_request in start:
                yield item_or_request
            return
        if not scheduler.config.seed:
            logger.info("FLEET_SEED is off: not running start(), taking work from the frontier")
            return
        scheduler.begin_seeding()
        complete = False
        fed = 0
        try:
            async for item_or_request in start:
                fed += 1
                if fed % _FEED_SLICE == 0:
                    # a long list must not starve the reactor (heartbeats, downloads)
                    await sleep(0)
                if not isinstance(item_or_request, Request):
                    yield item_or_request  # items from start() go to the pipelines as usual
                    continue
                # start_urls requests are dont_filter; in a fleet every process (and every
                # resumed run) feeds them again, so they are deduplicated like the rest
                if item_or_request.dont_filter:
                    item_or_request = item_or_request.replace(dont_filter=False)
                # straight into the frontier's push buffer: through the engine, every
                # start request would cost an engine loop and a Redis round trip
                scheduler.feed(item_or_request)
            complete = True
        except Exception as exc:
            # start() failed (e.g. the list could not be read): finishing with what was
            # fed would be a false success. The crawl is marked failed, every worker stops
            # with this message and a non-zero exit; the next run retries start().
            scheduler.fail_crawl(
                f"start() of spider {self.crawler.spider.name!r} failed: "
                f"{exc.__class__.__name__}: {exc}"
            )
            raise
        finally:
            scheduler.end_seeding(complete=complete)
