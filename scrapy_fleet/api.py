"""What a project's spiders may ask of scrapy-fleet (documented in the README).

Also public: the base classes in ``scrapy_fleet.spiders`` (``RedisSpider``,
``RedisCrawlSpider``), the add-on, the pipelines and ``scrapy_fleet.errors.exit_status``.
The rest of the package (the frontier's scheduler, queue, scripts...) is internal: a
spider that imports it breaks when it changes. Add here what spiders need instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_fleet.frontier.scheduler import FleetScheduler

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

__all__ = ["on_fleet_frontier"]


def on_fleet_frontier(crawler: Crawler) -> bool:
    """Whether this crawler schedules its requests on the shared Redis frontier.

    True when the crawl uses the fleet's scheduler (the add-on, or ``SCHEDULER`` set to
    it by hand), from the time the engine opens it: in ``start()``, callbacks and
    ``spider_opened`` handlers. On it, the fleet drains ``start()`` straight into Redis,
    which holds a list of any length. Scrapy's lazy-start pattern (``start()`` waiting
    for ``scheduler_empty`` while ``crawler.engine.needs_backout()``, to keep a long list
    out of the scheduler's memory) is then not needed, and only slows the feed.
    """
    return FleetScheduler.of(crawler) is not None
