"""robots.txt once per host for the fleet, and Crawl-delay for every worker
(scrapy_fleet/politeness/robots.py): three real workers against a local multi-host web."""

from __future__ import annotations

import time

import pytest
from protego import Protego

from conftest import free_port, run_link_spiders, runspider, total
from local_site import Host, PoliteSite, gaps, summary
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.politeness.robots import FleetRobotsTxtMiddleware, _body, _unreachable
from scrapy_fleet.politeness.robotstxt import MAX_READ_BYTES, compact_robots
from scrapy_fleet.politeness.store import PolitenessStore


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
    store.robots_put("h:80", "h", b"User-agent: *\nDisallow: /x\n")
    assert _body(store.robots_get("h:80")) == b"User-agent: *\nDisallow: /x\n"
    assert store.robots_lock("h:80", "c", ttl=0.3)  # the lock went with the put
    store.robots_put("g:80", "g", None)  # no robots.txt to be had: allow all
    assert _body(store.robots_get("g:80")) is None
    assert _body(b"-\n") is None and _body(b"200\nUser-agent: *\n") == b"User-agent: *\n"  # older entries
    store.robots_put("d:80", "d", None, unreachable="dns")  # the host's name does not resolve
    assert _body(store.robots_get("d:80")) is None
    assert _unreachable(store.robots_get("d:80")) == "dns"
    assert _unreachable(store.robots_get("g:80")) is None
    assert _unreachable(b"!rm-rf 1 - x\n") is None  # junk: not a kind we wrote
    assert store.counters(["politeness/robots_fetched"]) == [3]


def test_the_middleware_adds_to_scrapys_through_its_public_methods_only():
    from scrapy import Spider
    from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
    from scrapy.utils.test import get_crawler

    # it overrides public methods only, and keeps its own state in one attribute, so
    # nothing of ours can clash with (or lean on) the parent's private names
    overrides = {name for name in vars(FleetRobotsTxtMiddleware) if not name.startswith("__")}
    assert overrides == {"process_request", "robot_parser"}
    crawler = get_crawler(Spider, {"ROBOTSTXT_OBEY": True, "ROBOTSTXT_USER_AGENT": "fleetbot"})
    middleware = FleetRobotsTxtMiddleware(crawler)
    assert set(vars(middleware)) - set(vars(RobotsTxtMiddleware(crawler))) == {"fleet"}
    # the settings it needs it reads itself
    assert middleware.fleet.robotstxt_useragent == "fleetbot"
    assert middleware.fleet.parser_class.__name__ == "ProtegoRobotParser"


@pytest.fixture
def web(serve):
    return serve(PoliteSite([
        Host(pages=6, robots="User-agent: *\nCrawl-delay: 1\nDisallow: /p/5\n"),  # honoured
        Host(pages=12, robots="User-agent: *\nDisallow:\n"),  # no Crawl-delay: fast
        Host(pages=6, robots="User-agent: *\nCrawl-delay: 100\n"),  # above the cap: skipped
        Host(pages=6),  # no robots.txt at all (404)
    ]))


@pytest.mark.slow
def test_crawl_delay_is_honoured_across_workers_and_robots_fetched_once(tmp_path, web, fleet_settings):
    settings = {**fleet_settings, "ROBOTSTXT_OBEY": "True", "DOWNLOAD_DELAY": "0.1",
                "FLEET_MAX_CRAWL_DELAY": "10"}
    workers = run_link_spiders(tmp_path, web.hub_url, settings)
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


# --- what is kept of a robots.txt --------------------------------------------------------

SCRAPY_UA = "Scrapy/2.19 (+https://scrapy.org)"


def test_only_the_groups_for_our_agents_are_kept():
    text = (b"\xef\xbb\xbf# a comment line\n"
            b"Disallow: /orphan\n"  # before any User-agent: applies to nobody
            b"User-agent: GPTBot\nUser-agent: CCBot\nDisallow: /\n\n"
            b"User-agent: Googlebot\nUser-agent: scrapy  # ours\nDisallow: /g\n"
            b"Sitemap: https://example.com/sitemap.xml\n"
            b"Crawl-delay: 2\n\n"
            b"User-agent: *\nDisallow: /private\n\nDisallow: /after-blank\n")
    kept = compact_robots(text, [SCRAPY_UA], 64 * 1024)
    assert kept.body == (b"User-agent: scrapy\nDisallow: /g\nCrawl-delay: 2\n\n"
                         b"User-agent: *\nDisallow: /private\n\nDisallow: /after-blank\n")
    assert not kept.truncated
    for parser in (Protego.parse(text.decode("utf-8")[1:]), Protego.parse(kept.body.decode())):
        assert not parser.can_fetch("http://h/g/1", SCRAPY_UA)
        assert parser.can_fetch("http://h/private", SCRAPY_UA)  # the scrapy group wins
        assert parser.crawl_delay(SCRAPY_UA) == 2
    # another agent keeps the * group only
    assert compact_robots(text, ["wswp"], 64 * 1024).body == (
        b"User-agent: *\nDisallow: /private\n\nDisallow: /after-blank\n")
    # an HTML page served as robots.txt: nothing to keep
    assert compact_robots(b"<html><body>Not found</body></html>", ["wswp"], 1024).body == b""


def test_a_robots_txt_over_the_cap_is_cut_at_a_line_like_google_does():
    rules = b"".join(b"Disallow: /filler/%d\n" % i for i in range(400))
    text = b"User-agent: *\nDisallow: /early\n" + rules + b"Disallow: /late\n"
    kept = compact_robots(text, ["wswp"], 2048)
    assert kept.truncated and len(kept.body) <= 2048 and kept.body.endswith(b"\n")
    parser = Protego.parse(kept.body.decode())
    assert not parser.can_fetch("http://h/early", "wswp")
    assert parser.can_fetch("http://h/late", "wswp")  # after the cut: ignored
    # Google's read limit: 512 KiB of the download, whatever is kept of it
    huge = b"User-agent: *\nDisallow: /early\n" + b"# padding\n" * 60_000 + b"Disallow: /late\n"
    assert len(huge) > MAX_READ_BYTES
    kept = compact_robots(huge, ["wswp"], 64 * 1024)
    assert kept.truncated and kept.body == b"User-agent: *\nDisallow: /early\n"


@pytest.mark.slow
def test_a_long_robots_txt_is_stored_capped_and_counted(tmp_path, fleet_settings, redis_client, serve):
    filler = "".join(f"Disallow: /filler/{i}\n" for i in range(2000))
    others = "".join(f"User-agent: bot{i}\nDisallow: /\n\n" for i in range(2000))
    robots = others + "User-agent: *\nDisallow: /p/1\n" + filler + "Disallow: /p/2\n"
    assert len(robots) > 60_000
    site = serve(PoliteSite([Host(pages=4, robots=robots)]))  # p0 -> p1, p2; p1 -> p3
    settings = {**fleet_settings, "ROBOTSTXT_OBEY": "True", "FLEET_ROBOTS_MAX_BYTES": "4096"}
    workers = run_link_spiders(tmp_path, site.hub_url, settings, workers=1)
    host = site.host(0)
    # /p/1 is before the cut: obeyed; /p/2 after it: ignored, as Google would
    assert sorted(site.pages(host)) == ["/p/0", "/p/2"]
    assert total(workers, "fleet/politeness/robots_truncated") == 1
    assert workers[0].stat("fleet/crawl/politeness/robots_truncated") == 1
    assert "rules after the cut are ignored" in workers[0].text
    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links")
    stored = redis_client.hget(keys.robots, site.urls[0].split("//")[1])
    assert len(stored) < 4096 + 100 and b"bot1" not in stored  # other bots' groups dropped


@pytest.mark.slow
@pytest.mark.parametrize("skip", [True, False])
def test_pages_of_a_host_found_unreachable_fail_at_once(tmp_path, fleet_settings, redis_client, skip):
    # nothing listens on the port: robots.txt is refused, after its retries
    host = f"127.0.0.1:{free_port()}"
    urls = [f"http://{host}/p/{i}" for i in range(3)]
    settings = {**fleet_settings, "ROBOTSTXT_OBEY": "True", "RETRY_TIMES": "2",
                "FLEET_SKIP_UNREACHABLE_HOSTS": str(skip)}
    worker = runspider(tmp_path, "deadhostspider.py", settings, {"urls": ",".join(urls)})
    assert worker.finish() == 0, worker.text[-3000:]
    # the spider's errback sees the same kind of error either way
    assert worker.stat("test/errors/DownloadConnectionRefusedError") == 3, worker.text[-3000:]
    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "deadhosts")
    assert _unreachable(redis_client.hget(keys.robots, host)) == "refused"
    if skip:  # robots.txt's 3 attempts, and no page tried
        assert worker.stat("retry/count") == 2
        assert worker.stat("fleet/politeness/unreachable_skipped") == 3
    else:  # as Scrapy does: every page tried, with its own retries
        assert worker.stat("retry/count") == 2 + 3 * 2
        assert worker.stat("fleet/politeness/unreachable_skipped") == 0
