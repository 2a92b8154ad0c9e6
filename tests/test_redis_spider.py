"""RedisSpider: start URLs and scrapy-redis JSON pushed into Redis while the crawl runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import redis

from conftest import Output, read_items, runspider, wait_for
from local_site import LinkedSite
from scrapy_fleet.redis_server import find_redis_server


def redis_cli(url: str, *args: str) -> str:
    """Run the real redis-cli (shipped next to redis-server) against ``url``."""
    cli = Path(find_redis_server()).with_name("redis-cli")
    target = ["-s", url.split("://", 1)[1].split("?")[0]] if url.startswith("unix://") else ["-u", url]
    return subprocess.run([str(cli), *target, *args], check=True, capture_output=True,
                          text=True, timeout=30).stdout


def feed_settings(tmp_path: Path, fleet_settings: dict[str, str], **more: object) -> dict[str, object]:
    prefix = fleet_settings["FLEET_KEY_PREFIX"]
    return {**fleet_settings, "REDIS_START_URLS_KEY": f"{prefix}:%(name)s:start_urls",
            "FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl"),
            "FLEET_DATA_DIR": str(tmp_path / "data"), "FLEET_POLL_INTERVAL": 0.05, **more}


def test_urls_and_json_pushed_with_redis_cli_while_it_runs(
        tmp_path: Path, serve, redis_url: str, fleet_settings: dict[str, str]) -> None:
    site = serve(LinkedSite(20))
    key = f"{fleet_settings['FLEET_KEY_PREFIX']}:redisfeed:start_urls"
    worker = runspider(tmp_path, "feedspider.py",
                       feed_settings(tmp_path, fleet_settings, FLEET_IDLE_TIMEOUT=1.5))
    worker.wait_for(r"Reading start requests from Redis list")
    redis_cli(redis_url, "LPUSH", key, f"{site.url}/page/1", f"{site.url}/page/2")
    wait_for(lambda: site.page_fetches()[f"/page/2"], what="the first pushed URLs crawled")
    payload = {"url": f"{site.url}/page/3", "meta": {"job": "j-42"}}
    get = {"url": f"{site.url}/page/4", "method": "get", "meta": {"job": "g"}}
    redis_cli(redis_url, "RPUSH", key, json.dumps(payload), "not a url", "{bad json",
              '{"no": "url"}', json.dumps(get))
    assert worker.finish() == 0, worker.text  # ended by its idle timeout
    assert "The crawl is keep-alive" in worker.text
    items = {i["url"]: i for i in read_items(tmp_path / "out" / "%(name)s.jsonl", "redisfeed")}
    assert set(items) == {f"{site.url}/page/{n}" for n in (1, 2, 3, 4)}
    assert items[f"{site.url}/page/3"]["job"] == "j-42"  # meta reached the callback
    assert items[f"{site.url}/page/4"]["job"] == "g"
    assert worker.stat("fleet/feed/bad") == 3
    assert worker.stat("fleet/feed/entries") == 7
    assert "Skipped a bad entry" in worker.text
    client = redis.Redis.from_url(redis_url)
    assert client.llen(key) == 0
    crawl = f"{fleet_settings['FLEET_KEY_PREFIX']}:{{redisfeed}}"
    assert client.hget(f"{crawl}:state", "ended_by") == b"idle_timeout"
    assert client.hget(f"{crawl}:stats", "feed_bad") == b"3"  # counted with the batch's pushes


def test_redis_key_batch_size_and_encoding_as_scrapy_redis_reads_them() -> None:
    from scrapy.settings import Settings

    from scrapy_fleet.spiders import RedisSpider

    class Plain(RedisSpider):
        name = "plain"

    class Listed(RedisSpider):
        name = "listed"
        redis_key = ["%(name)s:urgent", "%(name)s:start_urls", "%(name)s:urgent"]
        redis_batch_size = 5
        redis_encoding = "latin-1"

    plain = Plain()
    plain.settings = Settings({"CONCURRENT_REQUESTS": 32})
    assert plain.redis_keys() == ["plain:start_urls"]
    assert plain.feed_batch_size() == 32 and plain.feed_encoding() == "utf-8"
    plain.settings = Settings({"REDIS_START_URLS_KEY": "jobs:%(name)s",
                               "REDIS_START_URLS_BATCH_SIZE": 7, "REDIS_ENCODING": "gbk"})
    assert plain.redis_keys() == ["jobs:plain"]
    assert plain.feed_batch_size() == 7 and plain.feed_encoding() == "gbk"
    listed = Listed()
    listed.settings = Settings()
    assert listed.redis_keys() == ["listed:urgent", "listed:start_urls"]  # priority order
    assert listed.feed_batch_size() == 5 and listed.feed_encoding() == "latin-1"
    assert listed.make_request_from_data("http://x.example/é".encode("latin-1")).url \
        == "http://x.example/%C3%A9"


def test_a_redis_spider_is_keep_alive_unless_told_otherwise() -> None:
    from scrapy.settings import Settings

    from scrapy_fleet.spiders import RedisCrawlSpider, RedisSpider

    class Idle(RedisSpider):
        name = "idle"
        max_idle_time = 30

    settings = Settings()
    Idle.update_settings(settings)
    assert settings.getbool("FLEET_KEEP_ALIVE") and settings.getfloat("FLEET_IDLE_TIMEOUT") == 30

    class Finite(RedisCrawlSpider):
        name = "finite"
        custom_settings = {"FLEET_KEEP_ALIVE": False}

    settings = Settings()
    Finite.update_settings(settings)
    assert not settings.getbool("FLEET_KEEP_ALIVE")
    settings = Settings()
    settings.set("FLEET_KEEP_ALIVE", False, priority="cmdline")  # -s FLEET_KEEP_ALIVE=0
    Idle.update_settings(settings)
    assert not settings.getbool("FLEET_KEEP_ALIVE")


def test_without_the_fleet_a_redis_spider_fails_clearly(tmp_path: Path, fleet_settings) -> None:
    from conftest import scrapy, runspider_args

    result = scrapy(tmp_path, *runspider_args(
        "feedspider.py", {"ADDONS": "{}", "ITEM_PIPELINES": "{}"}))
    assert result.returncode == 4, result.stderr[-2000:]
    assert "reads its start requests from Redis through the fleet frontier" in result.stderr


def test_seeds_of_an_overridden_start_requests_are_fed_too(
        tmp_path: Path, serve, fleet_settings: dict[str, str]) -> None:
    """A scrapy-redis spider that overrides start_requests() to add seeds of its own gets
    them crawled next to the key's entries (scrapy-redis's start_requests read the key)."""
    site = serve(LinkedSite(5))
    spider = tmp_path / "seeded.py"
    spider.write_text(
        "import scrapy\n"
        "from spiders.feedspider import FeedSpider\n\n"
        "class Seeded(FeedSpider):\n"
        "    name = 'seeded'\n"
        "    def start_requests(self):\n"
        f"        yield scrapy.Request('{site.url}/page/3')\n")
    worker = runspider(tmp_path, spider, feed_settings(tmp_path, fleet_settings,
                                                       FLEET_KEEP_ALIVE=0))
    assert worker.finish() == 0, worker.text
    assert set(site.page_fetches()) == {"/page/3"}


def test_an_overridden_make_request_from_data_makes_the_requests(
        tmp_path: Path, serve, redis_url: str, fleet_settings: dict[str, str]) -> None:
    """scrapy-redis's hook, overridden as its users do (own JSON, several requests per
    entry, meta for the callback), works unchanged; with FLEET_KEEP_ALIVE off the crawl
    ends once the key is drained and everything is crawled."""
    site = serve(LinkedSite(5))
    spider = tmp_path / "custom.py"
    spider.write_text(
        "import json\n"
        "import scrapy\n"
        "from spiders.feedspider import FeedSpider\n\n"
        "class Custom(FeedSpider):\n"
        "    name = 'custom'\n"
        "    def make_request_from_data(self, data):\n"
        "        job = json.loads(data)\n"
        "        return [scrapy.Request(f\"{job['link']}/page/{n}\", meta={'job': job['id']})\n"
        "                for n in job['pages']]\n")
    key = f"{fleet_settings['FLEET_KEY_PREFIX']}:custom:start_urls"
    redis_cli(redis_url, "LPUSH", key, json.dumps({"link": site.url, "id": "j1", "pages": [1, 2]}),
              json.dumps({"link": site.url, "id": "j2", "pages": [4]}), "not json")
    worker = runspider(tmp_path, spider, feed_settings(tmp_path, fleet_settings,
                                                       FLEET_KEEP_ALIVE=0))
    assert worker.finish() == 0, worker.text
    items = {i["url"]: i["job"] for i in read_items(tmp_path / "out" / "%(name)s.jsonl", "custom")}
    assert items == {f"{site.url}/page/1": "j1", f"{site.url}/page/2": "j1",
                     f"{site.url}/page/4": "j2"}
    assert worker.stat("fleet/feed/bad") == 1  # "not json": its JSONDecodeError is counted
