"""One line puts any Scrapy project on the fleet frontier: ``ADDONS = {FleetAddon: 0}``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from scrapy_fleet.config import ConfigError, FleetConfig, secret_settings
from scrapy_fleet.politeness.config import PolitenessConfig

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


def check_settings(settings: BaseSettings) -> None:
    """Read every FLEET_* setting once; a ConfigError names the first bad one."""
    FleetConfig.from_settings(settings)
    PolitenessConfig.from_settings(settings)


def apply_secret_settings(settings: BaseSettings) -> None:
    """The secret -s settings `scrapy fleet` passed by environment, applied as -s would be
    (they win over settings.py and the spider's custom_settings)."""
    for name, value in secret_settings().items():
        settings.set(name, value, priority="cmdline")


def _in_asyncio_task() -> bool:
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no running loop
        return False


class FleetAddon:
    def update_settings(self, settings: BaseSettings) -> None:
        # The earliest moment the spider's custom_settings and -s are both in.
        try:
            apply_secret_settings(settings)
            check_settings(settings)
        except ConfigError as exc:
            if _in_asyncio_task():
                # `scrapy crawl` (AsyncCrawlerProcess): an exception would come out of the
                # crawl task as pages of tracebacks ending in "Engine slot not assigned";
                # SystemExit leaves the loop at once, and Python prints just its message
                # (exit status 1), as the scheduler does when Redis is unreachable.
                raise SystemExit(f"scrapy-fleet: {exc}") from None
            raise  # CrawlerRunner (non-asyncio reactor): counted as a failed bootstrap, exit 1
        settings.set("SCHEDULER", "scrapy_fleet.frontier.scheduler.FleetScheduler", "addon")
        settings.set("DUPEFILTER_CLASS", "scrapy_fleet.frontier.dupefilter.FleetDupeFilter", "addon")
        settings["SPIDER_MIDDLEWARES"]["scrapy_fleet.frontier.start.FleetStartMiddleware"] = 0
        settings["SPIDER_MIDDLEWARES"]["scrapy_fleet.itemkeys.ItemKeyMiddleware"] = 10  # keys items for exactly-once output
        # politeness held in Redis for the whole fleet (scrapy_fleet/politeness, docs/politeness.md)
        mw = settings["DOWNLOADER_MIDDLEWARES"]
        mw["scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware"] = None
        mw["scrapy_fleet.politeness.robots.FleetRobotsTxtMiddleware"] = 100
        mw["scrapy_fleet.politeness.backoff.FleetBackoffMiddleware"] = 560  # sees 429/503 before retry
        mw["scrapy_fleet.politeness.slots.FleetSlotsMiddleware"] = 950  # after the cache: cached = no wait
        # AutoThrottle acts per process; FLEET_AUTOTHROTTLE (default: AUTOTHROTTLE_ENABLED) replaces it
        settings["EXTENSIONS"]["scrapy.extensions.throttle.AutoThrottle"] = None
