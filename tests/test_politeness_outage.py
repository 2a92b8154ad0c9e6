"""Requests that wait in the politeness layer: for their host's robots.txt.

Real workers, a real Redis, a local multi-host web whose chosen answers wait for the test
to release them. Every step waits on an event.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from conftest import run_link_spider
from polite_site import Host, PoliteSite, Worker
from processes import wait_until
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.redis_server import connect

WAIT = 120


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


@pytest.fixture
def start_worker(tmp_path: Path):
    """Start a worker on the link spider; any still running at the end is killed."""
    started: list[Worker] = []

    def start(url: str, settings: dict[str, str]) -> Worker:
        started.append(Worker(run_link_spider(tmp_path, url, settings)))
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
        wait_until(lambda: leases_of(client, keys, host) == 6)  # all six wait for the rules
        client.close()
        site.release()

        assert worker.finish(WAIT) == 0, worker.text[-5000:]
        assert sorted(site.pages(host)) == ["/p/0", "/p/1", "/p/2", "/p/6"]
        assert worker.stat("robotstxt/forbidden") == 3
        assert site.robots_fetches(host) == 1
    finally:
        site.stop()
