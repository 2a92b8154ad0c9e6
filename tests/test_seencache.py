"""Sure duplicates are dropped in the worker, and the crawl's counts stay exact."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from scrapy import Request, Spider
from scrapy.utils.request import RequestFingerprinter
from scrapy.utils.test import get_crawler

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.dupefilter import FleetDupeFilter
from scrapy_fleet.frontier.scheduler import FleetScheduler
from scrapy_fleet.frontier.seencache import SeenCache


def test_a_bounded_cache_that_keeps_what_is_met_often() -> None:
    cache = SeenCache(3)
    cache.add([b"a", b"b", b"", b"c"])
    assert len(cache) == 3 and b"" not in cache
    assert b"a" in cache  # met again: now the most recent
    cache.add([b"d"])
    assert b"a" in cache and b"b" not in cache and b"d" in cache
    off = SeenCache(0)
    off.add([b"a"])
    assert b"a" not in off


class Dummy(Spider):
    name = "dummy"


@pytest.fixture
def scheduler(redis_url: str, key_prefix: str) -> Iterator[FleetScheduler]:
    crawler = get_crawler(Dummy, {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix})
    assert crawler.stats is not None
    scheduler = FleetScheduler(
        config=FleetConfig.from_settings(crawler.settings),
        dupefilter=FleetDupeFilter(fingerprinter=RequestFingerprinter()), stats=crawler.stats)
    spider = Dummy.from_crawler(crawler)
    scheduler.open(spider)
    if scheduler._tick is not None and scheduler._tick.running:
        scheduler._tick.stop()  # no reactor runs here: everything is called directly
    yield scheduler
    scheduler.frontier.client.close()


def test_a_link_met_again_is_dropped_before_redis_and_still_counted(
        scheduler: FleetScheduler, redis_client: redis.Redis) -> None:
    assert scheduler.enqueue_request(Request("http://a.example/1"))
    assert scheduler.enqueue_request(Request("http://a.example/1"))  # same flush: Redis decides
    scheduler._flush()
    assert scheduler.stats.get_value("fleet/duplicate") == 1
    assert not scheduler.enqueue_request(Request("http://a.example/1"))  # known: dropped here
    assert scheduler._pushes == []  # nothing encoded or buffered
    assert scheduler.enqueue_request(Request("http://a.example/1", dont_filter=True))
    scheduler._flush()
    stats = redis_client.hgetall(scheduler.frontier.keys.stats)
    # the crawl's own totals count the local drop too: 2 duplicates, 2 requests stored
    assert stats[b"duplicate"] == b"2" and stats[b"enqueued"] == b"2"
    assert scheduler.stats.get_value("fleet/duplicate_local") == 1
