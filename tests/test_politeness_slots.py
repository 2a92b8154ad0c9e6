"""Fleet-wide delay and turns (scrapy_fleet/politeness/slots.py and its Redis scripts).

End to end: three real ``scrapy`` workers on one Redis against a local web of several
hosts that logs each request's arrival time. Timing asserts use generous bounds only.
"""

from __future__ import annotations

import time

import pytest

from conftest import finish_all, fp, open_frontier, run_link_spider, run_link_spiders, total
from local_site import Host, PoliteSite, gaps, summary
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.politeness.store import PolitenessStore


# --- the scripts against a real Redis ----------------------------------------------------


def test_reserve_spaces_unleased_downloads_and_the_next_lease(redis_client, redis_url, key_prefix):
    frontier = open_frontier(redis_client, redis_url, key_prefix, download_delay=0.3)
    store = PolitenessStore(frontier)
    frontier.flush([(fp(1), "h", 0, b"page")])
    assert store.reserve("h") == 0  # nothing before it: go now
    second = store.reserve("h")  # the next turn is one delay later
    assert 0.25 <= second <= 0.31
    # the queued page is held until after both turns
    assert frontier.flush(pop=5).popped == []
    deadline = time.monotonic() + 5
    started = time.monotonic()
    while not frontier.flush(pop=5).popped:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - started >= 0.5


def test_reserve_without_a_delay_is_free(redis_client, redis_url, key_prefix):
    store = PolitenessStore(open_frontier(redis_client, redis_url, key_prefix))
    assert [store.reserve("h") for _ in range(3)] == [0, 0, 0]


def test_adaptive_delay_follows_latency_within_bounds(redis_client, redis_url, key_prefix):
    store = PolitenessStore(open_frontier(redis_client, redis_url, key_prefix))
    kw = dict(start=5.0, minimum=0.2, maximum=10.0, target_concurrency=1.0)
    assert store.adapt("h", 1.0, 200, **kw) == 3.0  # halfway from the start delay
    assert store.adapt("h", 1.0, 200, **kw) == 2.0
    for _ in range(20):
        delay = store.adapt("h", 0.01, 200, **kw)
    assert delay == 0.2  # never below DOWNLOAD_DELAY
    assert store.adapt("h", 0.01, 500, **kw) == 0.2  # errors never lower it
    assert store.adapt("h", 100, 200, **kw) == 10.0  # nor above the maximum
    assert store.slot_delay("h") == 10.0
    store.set_crawl_delay("h", 4.0)  # a Crawl-delay is a floor
    for _ in range(20):
        delay = store.adapt("h", 0.01, 200, **kw)
    assert delay == 4.0


# --- the slot key: Scrapy's, and the frontier's ---------------------------------------


@pytest.fixture
def resolved():
    """A host name in Scrapy's DNS cache, as after its first download in this process."""
    from scrapy.resolver import dnscache

    dnscache["www.fleet-slot.test"] = "192.0.2.7"
    yield "www.fleet-slot.test", "192.0.2.7"
    dnscache.pop("www.fleet-slot.test", None)


def crawler_with_engine(settings: dict):
    from scrapy import Spider
    from scrapy.core.engine import ExecutionEngine
    from scrapy.utils.test import get_crawler

    # no download handlers: nothing is downloaded, and they would want a reactor
    crawler = get_crawler(Spider, {"DOWNLOAD_HANDLERS": {"http": None, "https": None}, **settings})
    crawler.engine = ExecutionEngine(crawler, lambda _: None)
    return crawler


def test_the_slot_key_is_the_downloaders(resolved):
    from scrapy import Request
    from scrapy.utils.test import get_crawler

    from scrapy_fleet.frontier.scheduler import slot_of
    from scrapy_fleet.politeness import slot_key

    host, _ = resolved
    crawler = crawler_with_engine({})
    page = Request(f"http://{host}:8080/p")
    pinned = Request(f"http://{host}/p", meta={"download_slot": "pinned"})
    for request in (page, pinned):
        key = crawler.engine.downloader.get_slot_key(request)
        assert slot_key(crawler, request) == key == slot_of(request)  # the frontier's queue
    assert slot_key(crawler, page) == host and slot_key(crawler, pinned) == "pinned"
    # before the crawl has an engine: the frontier's rule
    assert slot_key(get_crawler(), page) == host


@pytest.mark.filterwarnings("ignore:The CONCURRENT_REQUESTS_PER_IP setting is deprecated")
def test_per_ip_the_frontier_queues_under_the_politeness_slot(resolved):
    from scrapy import Request

    from scrapy_fleet.frontier.scheduler import slot_of
    from scrapy_fleet.politeness import slot_key

    host, ip = resolved
    crawler = crawler_with_engine({"CONCURRENT_REQUESTS_PER_IP": 1})
    request = Request(f"http://{host}/p")
    # Scrapy keys the slot by the host's IP once resolved: so must the delay, the pause,
    # the Crawl-delay kept in Redis, and the queue the frontier leases from
    assert slot_key(crawler, request) == ip == crawler.engine.downloader.get_slot_key(request)
    assert slot_of(request, crawler) == ip


# --- end to end ------------------------------------------------------------------------


@pytest.fixture
def web(serve):
    # host 0 is slow to answer; host 1 has a DOWNLOAD_SLOTS delay; the others are quick
    return serve(PoliteSite([Host(pages=8, latency=0.8)] + [Host(pages=8) for _ in range(4)]))


@pytest.mark.slow
def test_three_workers_keep_the_delay_per_host_and_hosts_do_not_wait(tmp_path, web, fleet_settings):
    delay = 0.5
    settings = {**fleet_settings, "DOWNLOAD_DELAY": str(delay), "ROBOTSTXT_OBEY": "True",
                # Scrapy's per-slot delay: held fleet-wide too
                "DOWNLOAD_SLOTS": '{"%s": {"delay": 1.0}}' % web.host(1)}
    workers = run_link_spiders(tmp_path, web.hub_url, settings)

    report = []
    for i in range(len(web.hosts)):
        host = web.host(i)
        arrivals = web.log(host)  # robots.txt included: it is a request to the host too
        assert sorted(web.pages(host)) == sorted(f"/p/{k}" for k in range(8)), host
        assert web.robots_fetches(host) == 1, host
        report.append(f"{host}: {summary(gaps(arrivals))}")
        assert min(gaps(arrivals)) >= 0.45, "\n".join(report)
    assert min(gaps(web.log(web.host(1)))) >= 0.9, "\n".join(report)
    # 45 arrivals at one host's pace would take > 20 s; the hosts went side by side
    first = min(a.at for a in web.arrivals)
    last = max(a.at for a in web.arrivals)
    assert last - first < 0.5 * len(web.arrivals) * delay, "\n".join(report)
    # the slow host did not hold the quick ones up: they finished long before it
    quick_done = max(web.log(web.host(i))[-1].at for i in range(2, 5))
    assert quick_done < web.log(web.host(0))[-1].at
    # the workers shared the work (a late starter may find little left)
    assert sum(w.stat("response_received_count") > 0 for w in workers) >= 2
    # hub + its robots.txt, 5 x 8 pages, 5 robots.txt: each fetched once in the fleet
    assert total(workers, "response_received_count") == 2 + 5 * 8 + 5
    assert workers[0].stat("fleet/politeness/delayed") > 0


@pytest.mark.slow
def test_three_workers_on_one_host_are_one_polite_crawler(tmp_path, fleet_settings, serve):
    site = serve(PoliteSite([Host(pages=16)]))
    settings = {**fleet_settings, "DOWNLOAD_DELAY": "0.5"}
    finish_all([run_link_spider(tmp_path, site.hub_url, {**settings, "USER_AGENT": f"worker-{i}"})
                for i in range(3)])
    log = site.log(site.host(0))
    assert len(log) == 16
    assert {a.agent for a in log} == {"worker-0", "worker-1", "worker-2"}  # all took part
    assert min(gaps(log)) >= 0.45, summary(gaps(log))
    # and no slower than the delay asks (generous: loaded CI machines)
    assert sorted(gaps(log))[len(log) // 2] < 0.8, summary(gaps(log))


@pytest.mark.slow
def test_adaptive_mode_sets_the_delay_from_latency_for_the_whole_fleet(tmp_path, fleet_settings, redis_client,
                                                                       serve):
    site = serve(PoliteSite([Host(pages=14, latency=0.3)]))
    settings = {**fleet_settings, "FLEET_AUTOTHROTTLE": "True", "AUTOTHROTTLE_START_DELAY": "1",
                "AUTOTHROTTLE_MAX_DELAY": "5"}
    run_link_spiders(tmp_path, site.hub_url, settings)
    host = site.host(0)
    assert sorted(site.pages(host)) == sorted(f"/p/{k}" for k in range(14))
    # without a delay the three workers would send up to 8 at once; here the shared
    # delay starts at 1 s and settles near the 0.3 s latency, never far below it
    steps = gaps(site.log(host))
    assert min(steps) >= 0.2, summary(steps)
    assert steps[0] >= 0.9  # AUTOTHROTTLE_START_DELAY, applied fleet-wide
    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links")
    assert 250 <= int(redis_client.hget(keys.slot_delay, host)) <= 700


def test_download_slots_delays_are_held_fleet_wide(redis_client, redis_url, key_prefix):
    store = PolitenessStore(open_frontier(redis_client, redis_url, key_prefix, download_delay=0.1))
    store.set_crawl_delay("crawly", 2.0)
    store.set_slot_delays({"slow.example": 1.5, "crawly": 0.5})
    assert store.slot_delay("slow.example") == 1.5
    assert store.slot_delay("crawly") == 2.0  # a Crawl-delay is a floor
    assert store.slot_delay("other") == 0.1  # DOWNLOAD_DELAY
