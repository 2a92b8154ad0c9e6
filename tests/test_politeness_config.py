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
