"""Per-host state that a broad crawl would keep for ever, forgotten when a host is done
(scrapy_fleet/politeness/prune.py and the PRUNE, ROBOTS_GET, ROBOTS_PUT scripts)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import finish_all, fp, open_frontier, runspider, total
from local_site import Host, PoliteSite, gaps, summary
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.politeness.config import PolitenessConfig
from scrapy_fleet.politeness.prune import HostStatePruner
from scrapy_fleet.politeness.store import PolitenessStore

TTL = 0.5
HASHES = ("nextok", "slotdelay", "crawldelay", "backoff", "robots")


def host_state(redis_client, keys: CrawlKeys) -> dict[str, dict[bytes, bytes]]:
    names = {"nextok": keys.nextok, "slotdelay": keys.slot_delay, "crawldelay": keys.crawl_delay,
             "backoff": keys.backoff, "robots": keys.robots}
    return {name: redis_client.hgetall(key) for name, key in names.items()}


def crawl_hosts(frontier: RedisFrontier, store: PolitenessStore, hosts: list[str], first_id: int) -> None:
    """What a crawl leaves behind for each host: a page leased and done, its robots.txt,
    a Crawl-delay for some, a 429 for others."""
    frontier.flush([(fp(first_id + i), h, 0, b"page") for i, h in enumerate(hosts)])
    leased = []
    while popped := frontier.flush(pop=500).popped:
        leased += [i for i, _ in popped]
    frontier.flush(acks=leased)
    for i, h in enumerate(hosts):
        store.robots_put(h, h, b"User-agent: *\nDisallow: /private\n",
                         crawl_delay=0.05 if i % 10 == 0 else None, skipped=i % 50 == 1)
        if i % 7 == 0:
            store.backoff(h, None, base=0.01, cap=0.05)


def test_prune_leaves_only_the_state_of_live_hosts(redis_client, redis_url, key_prefix):
    keys = CrawlKeys(key_prefix, "spider")
    frontier = open_frontier(redis_client, redis_url, key_prefix, download_delay=0.02)
    store = PolitenessStore(frontier)
    done = [f"done{i}.test" for i in range(600)]  # more than a small (listpack) hash holds
    crawl_hosts(frontier, store, done, 0)
    store.set_slot_delays({"kept.test": 1.0})  # DOWNLOAD_SLOTS: configured, never pruned
    # live hosts: requests queued, or leased, or a long 429 pause
    store.robots_put("queued.test", "queued.test", b"User-agent: *\n", crawl_delay=0.05)
    store.robots_put("leased.test", "leased.test", None)
    frontier.flush([(fp(10_001), "leased.test", 0, b"l")])
    # joins the crawl: a frontier flushes only once open
    other = open_frontier(redis_client, redis_url, key_prefix, "w2", download_delay=0.02)
    while not other.flush(pop=1).popped:  # held by another worker, not acknowledged
        time.sleep(0.01)
    store.backoff("paused.test", 30, base=1, cap=60)
    before = host_state(redis_client, keys)
    assert len(before["robots"]) == 602 and len(before["nextok"]) >= 600

    time.sleep(TTL + 0.1)
    crawl_hosts(frontier, store, ["recent.test"], 20_000)  # finished, but within the TTL
    frontier.flush([(fp(10_000), "queued.test", 0, b"q")])  # old state, a new request
    live = {b"queued.test", b"leased.test", b"paused.test", b"recent.test"}
    expected = {name: {f: v for f, v in host_state(redis_client, keys)[name].items() if f in live}
                for name in HASHES}
    expected["slotdelay"][b"kept.test"] = b"1000"

    # one PRUNE call is one bounded slice, not the whole hash
    cursor, first, _ = store.prune("nextok", "0", 20, TTL, 0.05, [])
    assert cursor not in (b"0", "0") and 0 < first < 200

    config = PolitenessConfig(host_state_ttl=TTL, backoff_max=0.05)
    slots, robots = HostStatePruner(store, config, ["kept.test"]).walk()
    assert host_state(redis_client, keys) == expected
    assert (first + slots, robots) == (600, 600)
    assert store.counters(["politeness/hosts_pruned", "politeness/robots_pruned"]) == [600, 600]
    # what the frontier keeps for live hosts is untouched
    assert redis_client.zcard(keys.queue("queued.test")) == 1
    assert redis_client.hget(keys.inflight, "leased.test") == b"1"


def test_a_pruned_slot_gets_its_crawl_delay_back_when_its_rules_are_read(redis_client, redis_url, key_prefix):
    keys = CrawlKeys(key_prefix, "spider")
    store = PolitenessStore(open_frontier(redis_client, redis_url, key_prefix))
    store.robots_put("h:8080", "h", b"User-agent: *\nCrawl-delay: 2\n", crawl_delay=2.0)
    assert store.slot_delay("h") == 2.0
    # no delay before robots.txt: the first page still waits a Crawl-delay after it
    assert 1.9 <= int(redis_client.hget(keys.nextok, "h")) / 1000 - time.time() <= 2.1
    for key in (keys.nextok, keys.slot_delay, keys.crawl_delay):  # as PRUNE leaves a finished slot
        redis_client.hdel(key, "h")
    assert store.slot_delay("h") == 0.0
    assert store.robots_get("h:8080").endswith(b"Crawl-delay: 2\n")
    assert store.slot_delay("h") == 2.0  # restored by the read
    assert redis_client.hget(keys.crawl_delay, "h") == b"2000"
    assert redis_client.hget(keys.nextok, "h") is not None


# --- end to end ------------------------------------------------------------------------

REVISIT = '''
import scrapy
from scrapy.utils.asyncio import sleep


class Revisit(scrapy.Spider):
    """Pages 0-2 of a host, then, after a pause, pages 3-5 of the same host."""
    name = "revisit"
    custom_settings = {"ADDONS": {"scrapy_fleet.addon.FleetAddon": 0}, "ITEM_PIPELINES": {},
                       "TELNETCONSOLE_ENABLED": False, "LOG_LEVEL": "INFO"}

    def __init__(self, host="", hub="", pause="0", **kwargs):
        super().__init__(**kwargs)
        self.host, self.hub, self.pause = host, hub, float(pause)

    async def start(self):
        for k in range(3):
            yield scrapy.Request(f"{self.host}/p/{k}", callback=self.page)
        yield scrapy.Request(f"{self.hub}?later", callback=self.later)

    def page(self, response):
        yield {"url": response.url}

    async def later(self, response):
        await sleep(self.pause)  # the host is finished and pruned meanwhile
        for k in range(3, 6):
            yield scrapy.Request(f"{self.host}/p/{k}", callback=self.page)
'''


@pytest.mark.slow
def test_a_host_pruned_and_crawled_again_gets_robots_and_crawl_delay_again(
        tmp_path: Path, fleet_settings, redis_client, serve):
    site = serve(PoliteSite([Host(pages=6, robots="User-agent: *\nCrawl-delay: 1\n")]))
    spider = tmp_path / "revisit.py"
    spider.write_text(REVISIT)
    settings = {**fleet_settings, "ROBOTSTXT_OBEY": "True", "FLEET_HOST_STATE_TTL": "2"}
    args = {"host": site.urls[0], "hub": site.hub_url, "pause": "12"}
    workers = finish_all([runspider(tmp_path, spider, settings, args) for _ in range(2)])
    host = site.host(0)
    log = site.log(host)
    assert sorted(site.pages(host)) == [f"/p/{k}" for k in range(6)]
    # fetched again after the prune, once for the fleet (not once per worker)
    paths = [a.path for a in log]
    assert paths[0] == paths[4] == "/robots.txt", paths
    assert sorted(paths[1:4]) == ["/p/0", "/p/1", "/p/2"] and len(paths) == 8, paths
    # Crawl-delay: 1 held between any two arrivals, before and after the prune
    assert min(gaps(log)) >= 0.9, summary(gaps(log))
    assert max(gaps(log)) >= 5  # the pause: two eras
    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "revisit")
    pruned = [int(v or 0) for v in redis_client.hmget(
        keys.stats, ["politeness/hosts_pruned", "politeness/robots_pruned"])]
    assert pruned[0] >= 1 and pruned[1] >= 1, pruned
    assert total(workers, "fleet/politeness/robots_reread") >= 1
    assert redis_client.hget(keys.crawl_delay, host) == b"1000"  # the second era's
