"""One line puts any Scrapy project on the fleet frontier: ``ADDONS = {FleetAddon: 0}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


class FleetAddon:
    def update_settings(self, settings: BaseSettings) -> None:
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
