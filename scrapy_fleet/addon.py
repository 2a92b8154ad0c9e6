"""One line puts any Scrapy project on the fleet frontier: ``ADDONS = {FleetAddon: 0}``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.extensions.throttle import AutoThrottle
from scrapy.utils.misc import load_object

from scrapy_fleet.config import ConfigError, FleetConfig, secret_settings
from scrapy_fleet.frontier.start import FleetStartMiddleware
from scrapy_fleet.itemkeys import ItemKeyMiddleware
from scrapy_fleet.politeness.backoff import FleetBackoffMiddleware
from scrapy_fleet.politeness.config import PolitenessConfig
from scrapy_fleet.politeness.robots import FleetRobotsTxtMiddleware
from scrapy_fleet.politeness.slots import FleetSlotsMiddleware

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings


SCHEDULER = "scrapy_fleet.frontier.scheduler.FleetScheduler"
DUPEFILTER = "scrapy_fleet.frontier.dupefilter.FleetDupeFilter"


def check_settings(settings: BaseSettings) -> None:
    """Read every FLEET_* setting once; a ConfigError names the first bad one."""
    FleetConfig.from_settings(settings)
    PolitenessConfig.from_settings(settings)
    check_components(settings)


def check_components(settings: BaseSettings) -> None:
    """scrapy-redis's SCHEDULER or DUPEFILTER_CLASS left in settings.py wins over the
    add-on's (Scrapy applies add-ons below the project's settings) and the crawl would die
    in a traceback; its STATS_CLASS would make the workers' counts add up once per worker
    in the crawl's totals. Name the line to remove instead. (Scrapy's own scheduler set
    on purpose, to run a project without the fleet, is left alone.)"""
    for name in ("SCHEDULER", "DUPEFILTER_CLASS", "STATS_CLASS"):
        value = settings.get(name)
        path = f"{value.__module__}.{value.__qualname__}" if isinstance(value, type) else str(value or "")
        if not path.startswith("scrapy_redis."):
            continue
        why = ("its workers share one stats hash, and the fleet adds each worker's stats to "
               "the crawl's totals, so they would count once per worker"
               if name == "STATS_CLASS" else
               "it wins over the one the fleet add-on sets, and the crawl could not start")
        raise ConfigError(f"{name} = {path!r} is left from scrapy-redis: {why}. "
                          "Remove that line (docs/migrating.md)")


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
        settings.set("SCHEDULER", SCHEDULER, "addon")
        settings.set("DUPEFILTER_CLASS", DUPEFILTER, "addon")
        # Our components, with Scrapy's helpers for component priority dictionaries: a
        # project or spider that lists one already (at another order, or None to turn it
        # off) keeps its choice, and no setting's priority changes.
        settings.setdefault_in_component_priority_dict("SPIDER_MIDDLEWARES", FleetStartMiddleware, 0)
        # keys items for exactly-once output
        settings.setdefault_in_component_priority_dict("SPIDER_MIDDLEWARES", ItemKeyMiddleware, 10)
        # politeness held in Redis for the whole fleet (scrapy_fleet/politeness, docs/politeness.md)
        replace_builtin(settings, "DOWNLOADER_MIDDLEWARES", RobotsTxtMiddleware, FleetRobotsTxtMiddleware)
        # sees 429/503 before RetryMiddleware (550)
        settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", FleetBackoffMiddleware, 560)
        # after the HTTP cache (900): a cached response waits for no turn
        settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", FleetSlotsMiddleware, 950)
        # AutoThrottle acts per process and would fight the fleet's delays: always off
        # (FLEET_AUTOTHROTTLE, by default AUTOTHROTTLE_ENABLED, replaces it)
        settings.set_in_component_priority_dict("EXTENSIONS", AutoThrottle, None)


def replace_builtin(settings: BaseSettings, name: str, old: type, new: type) -> None:
    """Put ``new`` where the built-in ``old`` is in the component priority dictionary
    ``name``, which Scrapy merges with ``name + "_BASE"``.

    ``replace_in_component_priority_dict`` alone reaches only ``name``, where a built-in
    is not listed unless the project moved or disabled it; so ``new`` takes ``old``'s order
    from ``name`` if listed there, else from the base, and ``old`` is set to None in
    ``name``. A project that lists ``new`` itself keeps its order; one that disabled
    ``old`` (None) gets neither.
    """
    listed = {load_object(key): value for key, value in settings.getdict(name).items()}
    if new not in listed:
        if old in listed:
            if listed[old] is None:
                return  # turned off by the project: so is what replaces it
            settings.replace_in_component_priority_dict(name, old, new)
        else:
            base = {load_object(key): value for key, value in settings.getdict(f"{name}_BASE").items()}
            settings.set_in_component_priority_dict(name, new, base.get(old))
    settings.set_in_component_priority_dict(name, old, None)  # else the base's runs too
