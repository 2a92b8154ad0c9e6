"""FLEET_* settings are read once, with clear errors for values we cannot use."""

from __future__ import annotations

import json

import pytest
from scrapy.settings import SETTINGS_PRIORITIES, Settings

from conftest import SPIDERS, make_project, scrapy
from scrapy_fleet.config import ConfigError, FleetConfig


def test_defaults():
    config = FleetConfig.from_settings(Settings())
    assert config.redis_url is None
    assert (config.data_dir, config.key_prefix, config.lease_timeout) == (".fleet", "fleet", 30.0)
    assert config.seed and not config.fresh and not config.keep_alive
    assert config.heartbeat_interval < config.lease_timeout / 2


def test_redis_url_setting_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/0")
    assert FleetConfig.from_settings(Settings()).redis_url == "redis://from-env:6379/0"
    settings = Settings({"REDIS_URL": "unix:///tmp/x.sock"})
    assert FleetConfig.from_settings(settings).redis_url == "unix:///tmp/x.sock"


def test_scrapy_redis_names_for_the_redis_server_and_the_idle_timeout():
    config = FleetConfig.from_settings(Settings({"REDIS_HOST": "redis.lan", "REDIS_PORT": "6380",
                                                 "MAX_IDLE_TIME_BEFORE_CLOSE": "30"}))
    assert config.redis_url == "redis://redis.lan:6380/0"
    assert config.idle_timeout == 30.0
    assert FleetConfig.from_settings(Settings({"REDIS_HOST": "::1", "REDIS_DB": "2"})).redis_url \
        == "redis://[::1]:6379/2"
    both = Settings({"REDIS_URL": "redis://main:6379/1", "REDIS_HOST": "other",
                     "FLEET_IDLE_TIMEOUT": "5", "MAX_IDLE_TIME_BEFORE_CLOSE": "30"})
    config = FleetConfig.from_settings(both)
    assert (config.redis_url, config.idle_timeout) == ("redis://main:6379/1", 5.0)  # ours win
    with pytest.raises(ConfigError, match="REDIS_DB is set without REDIS_HOST/REDIS_PORT"):
        FleetConfig.from_settings(Settings({"REDIS_DB": "3"}))
    with pytest.raises(ConfigError, match="REDIS_DB is set next to REDIS_URL"):
        FleetConfig.from_settings(Settings({"REDIS_URL": "redis://h:6379", "REDIS_DB": "3"}))
    with pytest.raises(ConfigError, match="MAX_IDLE_TIME_BEFORE_CLOSE must be a number"):
        FleetConfig.from_settings(Settings({"MAX_IDLE_TIME_BEFORE_CLOSE": "soon"}))


@pytest.mark.parametrize(("name", "value"), [
    ("SCHEDULER", "scrapy_redis.scheduler.Scheduler"),
    ("DUPEFILTER_CLASS", "scrapy_redis.dupefilter.RFPDupeFilter"),
    ("STATS_CLASS", "scrapy_redis.stats.RedisStatsCollector"),
])
def test_scrapy_redis_components_left_in_the_settings_are_named(name, value):
    from scrapy_fleet.addon import check_settings

    with pytest.raises(ConfigError, match=f"{name} = '{value}' is left from scrapy-redis"):
        check_settings(Settings({name: value}))
    check_settings(Settings({"SCHEDULER": "scrapy.core.scheduler.Scheduler"}))  # on purpose: fine


def test_values_from_the_command_line_are_strings():
    settings = Settings({"FLEET_LEASE_TIMEOUT": "3", "FLEET_SEED": "0", "FLEET_FRESH": "1",
                         "DOWNLOAD_DELAY": "0.5", "CONCURRENT_REQUESTS_PER_DOMAIN": "2"})
    config = FleetConfig.from_settings(settings)
    assert config.lease_timeout == 3.0 and not config.seed and config.fresh
    assert config.download_delay == 0.5 and config.concurrency_per_slot == 2


def test_what_requests_read_from_redis_may_be():
    config = FleetConfig.from_settings(Settings())
    assert config.allowed_schemes == {"http", "https"} and config.trusted_meta == set()
    assert config.max_request_bytes == 8 * 1024 * 1024
    settings = Settings({"FLEET_ALLOWED_SCHEMES": "http, https,FILE:", "FLEET_TRUSTED_META": "proxy",
                         "FLEET_MAX_REQUEST_BYTES": "1000"})
    config = FleetConfig.from_settings(settings)
    assert config.allowed_schemes == {"http", "https", "file"}
    assert config.trusted_meta == {"proxy"} and config.max_request_bytes == 1000


@pytest.mark.parametrize(
    ("name", "value"),
    [("FLEET_LEASE_TIMEOUT", "soon"), ("FLEET_LEASE_TIMEOUT", "0"), ("FLEET_BATCH_SIZE", "-1"),
     ("FLEET_KEY_PREFIX", "a{b}"), ("FLEET_KEY_PREFIX", ""),
     ("FLEET_ALLOWED_SCHEMES", ""), ("FLEET_ALLOWED_SCHEMES", "http,not a scheme"),
     ("FLEET_TRUSTED_META", "proxy,depth"), ("FLEET_MAX_REQUEST_BYTES", "0"),
     ("FLEET_MAX_REQUEST_BYTES", str(512 * 1024 * 1024))],
)
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        FleetConfig.from_settings(Settings({name: value}))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "setting", "message"),
    [
        (["runspider", str(SPIDERS / "linkspider.py")], "FLEET_LEASE_TIMEOUT=abc",
         "FLEET_LEASE_TIMEOUT must be a number, got 'abc'"),
        (["crawl", "links"], "FLEET_BACKOFF_BASE=-1", "FLEET_BACKOFF_BASE must be at least 0.001"),
    ],
)
def test_a_bad_setting_under_scrapy_crawl_is_one_line_and_a_failure(tmp_path, command, setting, message):
    project = make_project(tmp_path)
    result = scrapy(project, *command, "-a", "start_url=http://127.0.0.1:9/", "-s", setting,
                    "-s", f"FLEET_DATA_DIR={tmp_path / '.fleet'}")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    name = setting.split("=")[0]
    named = [line for line in output.splitlines() if name in line]
    assert len(named) == 1 and named[0].startswith(f"scrapy-fleet: {message}"), output
    assert "Traceback" not in output and "Engine slot not assigned" not in output, output


def test_secret_settings_are_split_from_the_command_line():
    from scrapy_fleet.config import split_secret_settings

    public, secret = split_secret_settings([
        "REDIS_URL=unix:///tmp/r.sock", "FLEET_KEY_PREFIX=x", "HTTPAUTH_PASS=pw",
        "AWS_SECRET_ACCESS_KEY=k", "MY_API_KEY=k2", "FEED_URI=ftp://user:pw@host/f",
        "LOG_LEVEL=INFO", "FLEET_LEASE_TIMEOUT=3",
    ])
    assert public == ["FLEET_KEY_PREFIX=x", "LOG_LEVEL=INFO", "FLEET_LEASE_TIMEOUT=3"]
    assert secret == {"REDIS_URL": "unix:///tmp/r.sock", "HTTPAUTH_PASS": "pw",
                      "AWS_SECRET_ACCESS_KEY": "k", "MY_API_KEY": "k2",
                      "FEED_URI": "ftp://user:pw@host/f"}


def test_secret_settings_from_the_environment_win_like_s(monkeypatch):
    from scrapy_fleet.addon import FleetAddon
    from scrapy_fleet.config import SECRET_SETTINGS_ENV, worker_environment

    env = worker_environment(["REDIS_URL=redis://:pw@h:1/0", "LOG_LEVEL=INFO"])
    assert json.loads(env[SECRET_SETTINGS_ENV]) == {"REDIS_URL": "redis://:pw@h:1/0"}
    monkeypatch.setenv(SECRET_SETTINGS_ENV, env[SECRET_SETTINGS_ENV])
    settings = Settings()
    settings.set("REDIS_URL", "redis://project:6379/0", priority="project")
    settings.set("REDIS_URL", "redis://spider:6379/0", priority="spider")
    FleetAddon().update_settings(settings)
    assert settings["REDIS_URL"] == "redis://:pw@h:1/0"
    assert settings.getpriority("REDIS_URL") == SETTINGS_PRIORITIES["cmdline"]
    monkeypatch.setenv(SECRET_SETTINGS_ENV, "not json")
    with pytest.raises(ConfigError, match=SECRET_SETTINGS_ENV):  # outside a crawl task
        FleetAddon().update_settings(Settings())


def test_seen_set_settings():
    config = FleetConfig.from_settings(Settings())
    assert config.layout_options() == {"dupefilter": "exact", "bloom_capacity": 10_000_000,
                                       "bloom_error_rate": 0.001, "partitions": None}
    config = FleetConfig.from_settings(Settings({"FLEET_DUPEFILTER": "Bloom",
                                                 "FLEET_BLOOM_CAPACITY": "1e6",
                                                 "FLEET_BLOOM_ERROR_RATE": "0.0001"}))
    assert (config.dupefilter, config.bloom_capacity, config.bloom_error_rate) == ("bloom", 10**6, 1e-4)
    assert FleetConfig.from_settings(Settings({"FLEET_PARTITIONS": "8"})).partitions == 8
    assert FleetConfig.from_settings(Settings({"FLEET_PARTITIONS": "auto"})).partitions is None
    assert FleetConfig.from_settings(Settings()).wait_replicas == 0
    assert FleetConfig.from_settings(Settings({"FLEET_WAIT_REPLICAS": "1"})).wait_replicas == 1
    for name, value, message in [
        ("FLEET_DUPEFILTER", "cuckoo", "must be one of exact, bloom"),
        ("FLEET_BLOOM_CAPACITY", "0", "must be at least 1"),
        ("FLEET_BLOOM_CAPACITY", "1e12", "must be at most"),
        ("FLEET_BLOOM_ERROR_RATE", "0", "must be greater than 0"),
        ("FLEET_BLOOM_ERROR_RATE", "1", "a fraction"),
        ("FLEET_BLOOM_ERROR_RATE", "lots", "must be a number"),
        ("FLEET_PARTITIONS", "0", "must be at least 1"),
        ("FLEET_PARTITIONS", "2.5", "whole number"),
        ("FLEET_PARTITIONS", "5000", "whole number from 1 to 1024"),
        ("FLEET_WAIT_REPLICAS", "-1", "must be at least 0"),
        ("FLEET_WAIT_REPLICAS", "1.5", "whole number"),
    ]:
        with pytest.raises(ConfigError, match=message):
            FleetConfig.from_settings(Settings({name: value}))
