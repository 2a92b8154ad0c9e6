"""robots.txt once per host for the fleet, and Crawl-delay for every worker
(scrapy_fleet/politeness/robots.py): three real workers against a local multi-host web."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import run_link_spider
from polite_site import Host, PoliteSite, Worker, gaps, summary, total
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.politeness.robots import NO_RULES, _body
from scrapy_fleet.politeness.store import PolitenessStore

WAIT = 120


def crawl(tmp_path: Path, site: PoliteSite, settings: dict[str, str], workers: int = 3) -> list[Worker]:
    procs = [Worker(run_link_spider(tmp_path, site.hub_url, settings)) for _ in range(workers)]
    codes = [w.finish(WAIT) for w in procs]
    assert codes == [0] * workers, "\n\n".join(w.text[-3000:] for w in procs)
    return procs


def test_one_fetcher_per_host_and_a_dead_ones_lock_lapses(redis_client, redis_url, key_prefix):
    frontier = RedisFrontier(redis_client, CrawlKeys(key_prefix, "spider"), "w1", url=redis_url)
    store = PolitenessStore(frontier)
    assert store.robots_get("h:80") is None
    assert store.robots_lock("h:80", "a", ttl=0.3)
    assert not store.robots_lock("h:80", "b", ttl=0.3)  # a fetches; b waits
    time.sleep(0.2)
    store.robots_lock_renew("h:80", 0.3)  # a is still at it
    time.sleep(0.2)
    assert not store.robots_lock("h:80", "b", ttl=0.3)
    time.sleep(0.4)  # a died: its lock lapses, b fetches
    assert store.robots_lock("h:80", "b", ttl=0.3)
    store.robots_put("h:80", b"200\nUser-agent: *\nDisallow: /x\n")
    assert _body(store.robots_get("h:80")) == b"User-agent: *\nDisallow: /x\n"
    assert store.robots_lock("h:80", "c", ttl=0.3)  # the lock went with the put
    assert _body(NO_RULES) is None
    assert store.counters(["politeness/robots_fetched"]) == [1]


@pytest.fixture
def web():
    site = PoliteSite([
        Host(pages=6, robots="User-agent: *\nCrawl-delay: 1\nDisallow: /p/5\n"),  # honoured
        Host(pages=12, robots="User-agent: *\nDisallow:\n"),  # no Crawl-delay: fast
        Host(pages=6, robots="User-agent: *\nCrawl-delay: 100\n"),  # above the cap: skipped
        Host(pages=6),  # no robots.txt at all (404)
    ]).start()
    yield site
    site.stop()


def test_crawl_delay_is_honoured_across_workers_and_robots_fetched_once(tmp_path, web, fleet_settings):
    settings = {**fleet_settings, "ROBOTSTXT_OBEY": "True", "DOWNLOAD_DELAY": "0.1",
                "FLEET_MAX_CRAWL_DELAY": "10"}
    workers = crawl(tmp_path, web, settings)
    text = "".join(w.text for w in workers)
    delayed, fast, skipped, bare = (web.host(i) for i in range(4))

    # robots.txt: once per host for the whole fleet, whatever it said
    for host in (delayed, fast, skipped, bare):
        assert web.robots_fetches(host) == 1, host
    assert total(workers, "robotstxt/request_count") == 5  # the four hosts and the hub

    # Crawl-delay: 1 holds between any two arrivals (robots.txt included) from any worker
    assert sorted(web.pages(delayed)) == [f"/p/{k}" for k in range(5)]  # /p/5 disallowed
    assert min(gaps(web.log(delayed))) >= 0.9, summary(gaps(web.log(delayed)))
    # ...and only for that host
    assert sorted(web.pages(fast)) == sorted(f"/p/{k}" for k in range(12))
    assert min(gaps(web.log(fast))) >= 0.05  # DOWNLOAD_DELAY 0.1, loose: loopback jitter under load
    assert min(gaps(web.log(fast))) < 0.9
    assert sorted(web.pages(bare)) == sorted(f"/p/{k}" for k in range(6))

    # Crawl-delay: 100 > FLEET_MAX_CRAWL_DELAY: nothing but robots.txt, and said so
    assert web.pages(skipped) == []
    assert "asks for Crawl-delay 100 s, above FLEET_MAX_CRAWL_DELAY (10 s)" in text
    assert total(workers, "fleet/politeness/crawl_delay_skipped") == 1  # its /p/0
    assert total(workers, "fleet/politeness/crawl_delay_hosts") == 2
    assert total(workers, "fleet/politeness/crawl_delay_skipped_hosts") == 1
    assert workers[0].stat("fleet/crawl/politeness/crawl_delay_hosts") == 2
    assert total(workers, "robotstxt/forbidden") == 1  # /p/5
    # dropped requests still finished: the crawl ended by itself with nothing leased
    for worker in workers:
        assert "finish_reason': 'finished'" in worker.text
