"""Requests that wait in the politeness layer: for their host's robots.txt, and for Redis
while it is away (issue 9, scrapy_fleet/politeness/outage.py): no sleep on the reactor
thread, politeness intact once Redis is back, and past the deadline a stopped worker
(exit 3) that acknowledged nothing it did not do.

Real workers, a real Redis (the outage tests stop and start one of their own), a local
multi-host web whose chosen answers wait for the test to release them. Every step waits
on an event.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import WAIT, OwnRedis, Output, run_link_spider, wait_for
from local_site import Host, PoliteSite, gaps, summary
from scrapy_fleet.errors import EXIT_REDIS_UNAVAILABLE
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.redis_server import connect

pytestmark = pytest.mark.slow  # real worker processes, a Redis stopped and restarted


class Gate:
    """An answer held back until the test releases it."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.released = threading.Event()

    def wait_arrival(self) -> None:
        assert self.arrived.wait(WAIT), "the request never arrived"


class GatedSite(PoliteSite):
    """A PoliteSite whose hub links to the given pages of each host, and whose first
    answer to each gated (host index, path) waits for its gate to open."""

    def __init__(self, hosts: list[Host], hub: dict[int, list[int]],
                 gated: list[tuple[int, str]]) -> None:
        super().__init__(hosts)
        self.hub = hub
        self.gates = {key: Gate() for key in gated}

    def _answer(self, host: Host | None, path: str) -> tuple[int, dict[str, str], bytes]:
        if host is None:
            links = "".join(f'<a href="{self.urls[i]}/p/{k}">{i}.{k}</a> '
                            for i, pages in self.hub.items() for k in pages)
            return 200, {}, f"<html><body>{links}</body></html>".encode()
        index = next(i for i, h in enumerate(self.hosts) if h is host)
        gate = self.gates.get((index, path))
        if gate is not None and not gate.arrived.is_set():
            gate.arrived.set()
            gate.released.wait(WAIT)
        return super()._answer(host, path)

    def release(self) -> None:
        for gate in self.gates.values():
            gate.released.set()

    def stop(self) -> None:
        self.release()
        super().stop()


def settings_for(own_redis: OwnRedis, key_prefix: str, **more: str) -> dict[str, str]:
    return {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix, "ROBOTSTXT_OBEY": "True",
            "LOG_LEVEL": "DEBUG", **more}


@pytest.fixture
def start_worker(tmp_path: Path):
    """Start a worker on the link spider; any still running at the end is killed."""
    started: list[Output] = []

    def start(url: str, settings: dict[str, str]) -> Output:
        started.append(run_link_spider(tmp_path, url, settings))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


def leases_of(client: redis.Redis, keys: CrawlKeys, slot: str) -> int:
    """Requests of ``slot`` leased by any worker, live or dead (not acknowledged)."""
    count = 0
    for key in client.scan_iter(match=keys.lease_prefix + "*"):
        count += sum(entry.split(b" ", 1)[-1] == slot.encode() for entry in client.hvals(key))
    return count


def test_every_request_waiting_for_robots_txt_gets_its_rules(fleet_settings, start_worker):
    """Requests of a host leased together all wait for its robots.txt: each one gets the
    rules, not only the first (a Deferred awaited by many hands its result to one)."""
    site = GatedSite([Host(pages=10, robots="User-agent: *\nDisallow: /p/3\nDisallow: /p/4\n"
                                            "Disallow: /p/5\n")],
                     hub={0: list(range(6))}, gated=[(0, "/robots.txt")]).start()
    try:
        keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links")
        host = site.host(0)
        worker = start_worker(site.hub_url, {**fleet_settings, "ROBOTSTXT_OBEY": "True"})
        site.gates[(0, "/robots.txt")].wait_arrival()
        client = connect(fleet_settings["REDIS_URL"])
        wait_for(lambda: leases_of(client, keys, host) == 6)  # all six wait for the rules
        client.close()
        site.release()

        assert worker.finish(WAIT) == 0, worker.text[-5000:]
        assert sorted(site.pages(host)) == ["/p/0", "/p/1", "/p/2", "/p/6"]
        assert worker.stat("robotstxt/forbidden") == 3
        assert site.robots_fetches(host) == 1
    finally:
        site.stop()


@pytest.fixture
def outage_site():
    # host 0: its six first pages linked from the hub, all leased while its robots.txt
    # (gated) is fetched, so all of them wait for the rules; three are disallowed
    # host 1: its first page answers 429 with Retry-After 2 (gated)
    # host 2: one plain page (gated)
    site = GatedSite(
        [Host(pages=10, robots="User-agent: *\nCrawl-delay: 1\nDisallow: /p/3\nDisallow: /p/4\n"
                               "Disallow: /p/5\n"),
         Host(pages=3, scripted={"/p/0": [(429, {"Retry-After": "2"})]}),
         Host(pages=1)],
        hub={0: list(range(6)), 1: [0], 2: [0]},
        gated=[(0, "/robots.txt"), (1, "/p/0"), (2, "/p/0")],
    ).start()
    yield site
    site.stop()


def test_the_reactor_runs_through_an_outage_and_politeness_holds_after_it(
        outage_site: GatedSite, own_redis: OwnRedis, key_prefix: str, start_worker):
    site = outage_site
    keys = CrawlKeys(key_prefix, "links")
    robots_host, busy_host, plain_host = site.host(0), site.host(1), site.host(2)
    # a deadline far beyond the test's waits: a reactor asleep in a retry loop would
    # sleep through them; a TTL of 4 s: the pruner walks every second, so during the outage
    worker = start_worker(site.hub_url, settings_for(
        own_redis, key_prefix, FLEET_REDIS_RETRY_TIMEOUT="300", FLEET_HOST_STATE_TTL="4"))
    for gate in site.gates.values():
        gate.wait_arrival()
    client = connect(own_redis.url)
    wait_for(lambda: leases_of(client, keys, robots_host) == 6)
    client.close()

    own_redis.stop()
    worker.wait_for(r"Redis at .* unreachable")
    # robots.txt reaches the worker, which cannot store it: the six requests wait for it
    site.gates[(0, "/robots.txt")].released.set()
    worker.wait_for(rf"Crawled \(200\) <GET http://{robots_host}:\d+/robots\.txt>")
    # ...and while they wait, the reactor takes other responses in (the 429 waits for
    # its pause to be written) and its LoopingCalls run: all with Redis still down
    site.release()
    worker.wait_for(rf"Crawled \(200\) <GET http://{plain_host}:\d+/p/0>", timeout=60)
    worker.wait_for(r"Redis is away: skipped prune for now", timeout=60)
    assert "is back after" not in worker.text
    restarted = time.monotonic()  # the clock PoliteSite stamps arrivals with
    own_redis.start()

    assert worker.finish(WAIT) == 0, worker.text[-5000:]
    assert "is back after" in worker.text
    # robots.txt: fetched once, stored when Redis came back, and obeyed by every request
    # that waited for it (not "allow all" for the ones that waited behind the first)
    assert site.robots_fetches(robots_host) == 1
    assert sorted(site.pages(robots_host)) == ["/p/0", "/p/1", "/p/2", "/p/6"]
    # its Crawl-delay held for the requests that waited through the outage too
    log = site.log(robots_host)
    assert min(gaps(log)) >= 0.9, summary(gaps(log))
    # the 429's pause was written once Redis was back, before its retry could be leased
    after = [a.at for a in site.log(busy_host) if a.at > restarted]
    assert after and after[0] - restarted >= 1.8, (after, restarted)
    assert sorted(site.pages(busy_host)) == ["/p/0", "/p/0", "/p/1", "/p/2"]
    assert worker.stat("fleet/politeness/backoff") == 1
    assert worker.stat("fleet/politeness/redis_skipped/prune") >= 1


def test_past_the_deadline_the_worker_stops_and_leaves_what_waited_leased(
        own_redis: OwnRedis, key_prefix: str, start_worker):
    site = GatedSite([Host(pages=6, robots="User-agent: *\nDisallow: /p/5\n")],
                     hub={0: list(range(6))}, gated=[(0, "/robots.txt")]).start()
    try:
        keys = CrawlKeys(key_prefix, "links")
        host = site.host(0)
        # a short robots.txt lock: the next run waits for the stopped worker's to lapse
        settings = settings_for(own_redis, key_prefix, FLEET_REDIS_RETRY_TIMEOUT="2",
                                FLEET_LEASE_TIMEOUT="2", FLEET_ROBOTS_TIMEOUT="3")
        worker = start_worker(site.hub_url, settings)
        site.gates[(0, "/robots.txt")].wait_arrival()
        client = connect(own_redis.url)
        wait_for(lambda: leases_of(client, keys, host) == 6)
        client.close()

        own_redis.stop()
        worker.wait_for(r"Redis at .* unreachable")
        site.release()  # robots.txt arrives; it can't be stored, so no rules are known

        assert worker.finish(WAIT) == EXIT_REDIS_UNAVAILABLE, worker.text[-5000:]
        assert f"Redis at {own_redis.url} unreachable for" in worker.text
        assert "finish_reason': 'redis_unavailable'" in worker.text
        # without rules nothing of the host was downloaded, not even the allowed pages,
        # and every request that waited for the rules ended unfinished
        assert site.pages(host) == []
        assert worker.text.count("Not done, left leased for another run") == 6

        own_redis.start()
        client = connect(own_redis.url)
        assert leases_of(client, keys, host) == 6  # none of them acknowledged
        client.close()
        # the next run gets them back (reclaimed from the dead worker) and does them
        again = start_worker(site.hub_url, {**settings, "FLEET_REDIS_RETRY_TIMEOUT": "60"})
        assert again.finish(WAIT) == 0, again.text[-5000:]
        assert sorted(site.pages(host)) == [f"/p/{k}" for k in range(5)]
        assert site.robots_fetches(host) == 2  # the first worker could never store it
    finally:
        site.stop()
