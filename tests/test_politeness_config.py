"""The politeness settings (scrapy_fleet/politeness/config.py)."""

from __future__ import annotations

import pytest
from scrapy.settings import Settings

from scrapy_fleet.config import ConfigError
from scrapy_fleet.politeness.config import PolitenessConfig


def test_defaults():
    config = PolitenessConfig.from_settings(Settings())
    assert config == PolitenessConfig()
    assert config.backoff_codes == {429, 503}
    assert config.autothrottle is False
    assert (config.host_state_ttl, config.robots_max_bytes) == (600.0, 65536)


def test_values_and_autothrottle_follows_scrapys_switch():
    config = PolitenessConfig.from_settings(Settings({
        "DOWNLOAD_DELAY": "0.5", "FLEET_MAX_CRAWL_DELAY": "5", "FLEET_BACKOFF_BASE": "2",
        "FLEET_BACKOFF_MAX": "60", "FLEET_BACKOFF_HTTP_CODES": "429,503,509",
        "AUTOTHROTTLE_ENABLED": "True", "AUTOTHROTTLE_MAX_DELAY": "20",
        "FLEET_HOST_STATE_TTL": "0", "FLEET_ROBOTS_MAX_BYTES": "16384",
    }))
    assert (config.host_state_ttl, config.robots_max_bytes) == (0.0, 16384)  # 0: never prune
    assert (config.download_delay, config.max_crawl_delay) == (0.5, 5.0)
    assert (config.backoff_base, config.backoff_max) == (2.0, 60.0)
    assert config.backoff_codes == {429, 503, 509}
    assert config.autothrottle and config.autothrottle_max_delay == 20.0
    off = PolitenessConfig.from_settings(Settings({"AUTOTHROTTLE_ENABLED": True, "FLEET_AUTOTHROTTLE": False}))
    assert off.autothrottle is False


@pytest.mark.parametrize("name, value", [
    ("FLEET_MAX_CRAWL_DELAY", "-1"),
    ("FLEET_BACKOFF_BASE", "0"),
    ("FLEET_BACKOFF_MAX", "soon"),
    ("FLEET_BACKOFF_HTTP_CODES", "429,later"),
    ("DOWNLOAD_DELAY", "-0.5"),
    ("FLEET_HOST_STATE_TTL", "-1"),
    ("FLEET_ROBOTS_MAX_BYTES", "100"),
])
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        PolitenessConfig.from_settings(Settings({name: value}))


def test_backoff_cap_below_base_is_refused():
    with pytest.raises(ConfigError, match="FLEET_BACKOFF_MAX"):
        PolitenessConfig.from_settings(Settings({"FLEET_BACKOFF_BASE": "10", "FLEET_BACKOFF_MAX": "5"}))


# --- the add-on (scrapy_fleet/addon.py) ------------------------------------------------

ROBOTS = "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware"
FLEET_ROBOTS = "scrapy_fleet.politeness.robots.FleetRobotsTxtMiddleware"
BACKOFF = "scrapy_fleet.politeness.backoff.FleetBackoffMiddleware"
SLOTS = "scrapy_fleet.politeness.slots.FleetSlotsMiddleware"
AUTOTHROTTLE = "scrapy.extensions.throttle.AutoThrottle"


def enabled(settings: dict) -> tuple[Settings, dict[str, dict[str, int]]]:
    """The settings of a crawler with the add-on, and the components Scrapy will build."""
    from scrapy import Spider
    from scrapy.utils.misc import load_object
    from scrapy.utils.test import get_crawler

    crawler = get_crawler(Spider, {"ADDONS": {"scrapy_fleet.addon.FleetAddon": 0}, **settings})
    built = {}
    for name in ("DOWNLOADER_MIDDLEWARES", "SPIDER_MIDDLEWARES", "EXTENSIONS"):
        merged = crawler.settings.get_component_priority_dict_with_base(name)
        built[name] = {
            f"{cls.__module__}.{cls.__qualname__}": order
            for cls, order in ((load_object(k), v) for k, v in merged.items())
        }
    return crawler.settings, built


def test_the_addon_puts_the_fleets_components_in_place():
    settings, built = enabled({})
    mws = built["DOWNLOADER_MIDDLEWARES"]
    assert ROBOTS not in mws and mws[FLEET_ROBOTS] == 100  # in the built-in's place
    assert (mws[BACKOFF], mws[SLOTS]) == (560, 950)
    spider_mws = built["SPIDER_MIDDLEWARES"]
    assert spider_mws["scrapy_fleet.frontier.start.FleetStartMiddleware"] == 0
    assert spider_mws["scrapy_fleet.itemkeys.ItemKeyMiddleware"] == 10
    assert AUTOTHROTTLE not in built["EXTENSIONS"]
    assert settings["SCHEDULER"] == "scrapy_fleet.frontier.scheduler.FleetScheduler"
    # edited in place: the dicts keep their priority (Scrapy's defaults here)
    assert settings.getpriority("DOWNLOADER_MIDDLEWARES") == 0


def test_a_projects_own_orders_win_over_the_addons():
    settings, built = enabled({
        "DOWNLOADER_MIDDLEWARES": {BACKOFF: None, SLOTS: 960, ROBOTS: 120},
        "EXTENSIONS": {AUTOTHROTTLE: 0},
    })
    mws = built["DOWNLOADER_MIDDLEWARES"]
    assert BACKOFF not in mws and mws[SLOTS] == 960  # turned off, moved: as the project says
    assert ROBOTS not in mws and mws[FLEET_ROBOTS] == 120  # the built-in's new place
    assert AUTOTHROTTLE not in built["EXTENSIONS"]  # per process, it would fight the fleet
    assert settings.getpriority("DOWNLOADER_MIDDLEWARES") == 20  # "project", unchanged

    # a project that turned robots.txt handling off gets neither middleware
    _, built = enabled({"DOWNLOADER_MIDDLEWARES": {ROBOTS: None}})
    assert ROBOTS not in built["DOWNLOADER_MIDDLEWARES"]
    assert FLEET_ROBOTS not in built["DOWNLOADER_MIDDLEWARES"]
    # one that lists ours itself keeps its order, and the built-in stays off
    _, built = enabled({"DOWNLOADER_MIDDLEWARES": {FLEET_ROBOTS: 90}})
    assert built["DOWNLOADER_MIDDLEWARES"][FLEET_ROBOTS] == 90 and ROBOTS not in built["DOWNLOADER_MIDDLEWARES"]
