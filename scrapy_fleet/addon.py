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
