"""FleetScheduler end to end: real `scrapy` processes, a real Redis, a local site."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path

import msgpack
import pytest

from conftest import (OwnRedis, crawl_under_way, frontier, run_link_spider, run_link_spiders, runspider_args, scrapy,
                      wait_for)
from local_site import LinkedSite
from scrapy_fleet.frontier import codec
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.redis_server import connect

pytestmark = pytest.mark.slow  # every test runs real `scrapy` workers

PAGES = 300
# The whole site is one host, and CONCURRENT_REQUESTS_PER_DOMAIN is a fleet-wide cap: at
# the default (8) one worker can hold all of the host's slots. Let both workers in.
SHARED_HOST = {"CONCURRENT_REQUESTS_PER_DOMAIN": "64"}


@pytest.fixture
def site(serve):
    return serve(LinkedSite(PAGES, delay=0.03))  # a little latency: concurrent workers overlap


def all_pages() -> set[str]:
    return {f"/page/{i}" for i in range(PAGES)}


def test_two_processes_fetch_every_page_exactly_once(tmp_path: Path, site, fleet_settings):
    settings = {**fleet_settings, **SHARED_HOST}
    workers = run_link_spiders(tmp_path, f"{site.url}/page/0", settings, workers=2)

    fetches = site.page_fetches()
    assert set(fetches) == all_pages()
    assert max(fetches.values()) == 1
    for worker in workers:
        assert "finish_reason': 'finished'" in worker.text
    assert sum(w.stat("response_received_count") for w in workers) == PAGES
    assert all(w.stat("response_received_count") > 0 for w in workers)  # both took part


def leases_of(redis_client, key_prefix: str, pid: int) -> int:
    keys = CrawlKeys(key_prefix, "links")
    for worker in redis_client.zrange(keys.workers, 0, -1):
        if f":{pid}:" in worker.decode():
            return redis_client.hlen(keys.lease(worker.decode()))
    return 0


def test_sigkilled_worker_loses_nothing(tmp_path: Path, site, fleet_settings, redis_client):
    settings = {**fleet_settings, **SHARED_HOST, "FLEET_LEASE_TIMEOUT": "2"}
    victim = run_link_spider(tmp_path, f"{site.url}/page/0", settings)
    survivor = run_link_spider(tmp_path, f"{site.url}/page/0", settings)
    # kill it while it holds work, after the crawl is well under way
    wait_for(lambda: len(site.page_fetches()) >= 60
               and leases_of(redis_client, fleet_settings["FLEET_KEY_PREFIX"], victim.proc.pid) > 0)
    victim.proc.send_signal(signal.SIGKILL)
    assert victim.finish() == -signal.SIGKILL

    restarted = run_link_spider(tmp_path, f"{site.url}/page/0", settings)
    assert survivor.finish() == 0, survivor.text[-3000:]
    assert restarted.finish() == 0, restarted.text[-3000:]

    fetches = site.page_fetches()
    assert set(fetches) == all_pages()
    # only what the killed worker held in flight may have been fetched twice
    refetched = sum(n - 1 for n in fetches.values())
    assert refetched <= 16 + 16  # CONCURRENT_REQUESTS + FLEET_BATCH_SIZE
    assert "stopped heartbeating" in survivor.text + restarted.text
    # the killed worker's counters went with its acks: every page acknowledged is counted
    stats = frontier(fleet_settings["REDIS_URL"], fleet_settings["FLEET_KEY_PREFIX"]).status()["stats"]
    assert stats["acked"] >= len(fetches) and stats["pages"] >= len(fetches), stats


def test_crawl_survives_a_redis_restart(tmp_path: Path, site, own_redis: OwnRedis, key_prefix):
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix,
                "FLEET_REDIS_RETRY_TIMEOUT": "60"}
    worker = crawl_under_way(tmp_path, site, settings, pages=60)
    own_redis.stop()  # SHUTDOWN SAVE: the append-only file keeps the frontier
    worker.wait_for("unreachable")
    own_redis.start()

    assert worker.finish() == 0, worker.text[-3000:]
    assert "is back after" in worker.text
    fetches = site.page_fetches()
    assert set(fetches) == all_pages()
    assert sum(n - 1 for n in fetches.values()) <= 32


def test_foreign_queue_entries_are_dropped_never_run(tmp_path: Path, site, fleet_settings, redis_client):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links")
    entries = {
        "9000001": pickle.dumps(Exploit()),  # what scrapy-redis would store, weaponised
        "9000002": codec._compact({"url": f"{site.url}/x", "callback": "__init__"}),
        "9000003": codec.MAGIC_V1 + msgpack.packb({"url": f"{site.url}/x", "_class": "os.system"}),
        "9000004": b"\xf1\xc1garbage",
    }
    slot = "127.0.0.1"
    for lease, blob in entries.items():
        redis_client.hset(keys.payload, lease, blob)
        redis_client.zadd(keys.queue(slot), {lease: -1e15})  # ahead of everything
    redis_client.zadd(keys.ready, {slot: -1e15})
    redis_client.hset(keys.state, "status", "running")  # an unfinished crawl: resume it

    worker = run_link_spider(tmp_path, f"{site.url}/page/0", fleet_settings)
    assert worker.finish() == 0, worker.text[-3000:]

    assert not marker.exists()
    assert worker.stat("fleet/invalid") == len(entries)
    assert worker.text.count("Dropped invalid queue entry") == len(entries)
    assert set(site.page_fetches()) == all_pages()
    assert not redis_client.hexists(keys.payload, "9000001")


def test_unreachable_redis_fails_fast_with_a_clear_message(tmp_path: Path):
    started = time.monotonic()
    worker = run_link_spider(
        tmp_path, "http://127.0.0.1:9/", {"REDIS_URL": "redis://:s3cret@127.0.0.1:9/0"},
    )
    code = worker.finish(timeout=30)
    elapsed = time.monotonic() - started

    assert code != 0
    assert elapsed < 15
    assert "Redis at redis://:***@127.0.0.1:9/0 unreachable" in worker.text
    assert "s3cret" not in worker.text


def test_losing_redis_for_good_stops_with_a_clear_error(tmp_path: Path, site, own_redis: OwnRedis, key_prefix):
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix,
                "FLEET_REDIS_RETRY_TIMEOUT": "2"}
    worker = crawl_under_way(tmp_path, site, settings, pages=30)
    own_redis.stop()

    assert worker.finish() == 3
    assert f"Redis at {own_redis.url} unreachable for" in worker.text
    assert "finish_reason': 'redis_unavailable'" in worker.text


def test_ctrl_c_keeps_the_frontier_and_a_rerun_resumes(tmp_path: Path, site, fleet_settings):
    first = crawl_under_way(tmp_path, site, fleet_settings, pages=60)
    first.proc.send_signal(signal.SIGINT)
    assert first.finish() == 0
    assert "finish_reason': 'shutdown'" in first.text
    keys = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links")
    with connect(fleet_settings["REDIS_URL"]) as client:  # it handed back all it held
        assert client.hget(keys.stats, "leased") == b"0" and client.zcard(keys.workers) == 0
    fetched_before = set(site.page_fetches())
    assert fetched_before != all_pages()

    second = run_link_spider(tmp_path, f"{site.url}/page/0", fleet_settings)
    assert second.finish() == 0, second.text[-3000:]
    assert "resumed crawl" in second.text
    fetches = site.page_fetches()
    assert set(fetches) == all_pages()
    assert sum(n - 1 for n in fetches.values()) <= 32  # at most what was in flight
    assert second.stat("response_received_count") < PAGES


def test_a_finished_crawl_starts_afresh(tmp_path: Path, fleet_settings, serve):
    site = serve(LinkedSite(20))
    for run in range(2):
        worker = run_link_spider(tmp_path, f"{site.url}/page/0", fleet_settings)
        assert worker.finish() == 0
        assert ("new crawl" if run == 0 else "fresh crawl") in worker.text
    assert set(site.page_fetches().values()) == {2}


def test_a_request_that_cannot_be_stored_fails_where_it_is_made(tmp_path: Path, fleet_settings, serve):
    site = serve(LinkedSite(10))
    proc = scrapy(tmp_path, *runspider_args("badmetaspider.py", fleet_settings,
                                            {"start_url": f"{site.url}/page/0"}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "meta['tags'] holds a set" in proc.stderr
    # the parent was still acknowledged and its other output crawled
    assert set(site.page_fetches()) == {"/page/0", "/page/2"}
    assert "'fleet/acked': 2" in proc.stderr


def test_keep_alive_workers_wait_for_new_work(tmp_path: Path, fleet_settings, redis_client, serve):
    """FLEET_KEEP_ALIVE: like scrapy-redis, a worker stays up for work fed later."""
    first_site, later_site = serve(LinkedSite(5)), serve(LinkedSite(5))
    waiting = run_link_spider(
        tmp_path, f"{first_site.url}/page/0", {**fleet_settings, "FLEET_KEEP_ALIVE": "1"},
    )
    wait_for(lambda: set(first_site.page_fetches()) == {f"/page/{i}" for i in range(5)})
    assert waiting.proc.poll() is None  # done with all it had, still waiting

    # another process feeds new start URLs (and takes work, too)
    feeder = run_link_spider(
        tmp_path, f"{later_site.url}/page/0", {**fleet_settings, "FLEET_KEEP_ALIVE": "1"},
    )
    wait_for(lambda: set(later_site.page_fetches()) == {f"/page/{i}" for i in range(5)})
    for worker in (waiting, feeder):
        worker.proc.send_signal(signal.SIGINT)
    assert waiting.finish() == 0 and feeder.finish() == 0
    assert waiting.stat("response_received_count") + feeder.stat("response_received_count") == 10
    state = CrawlKeys(fleet_settings["FLEET_KEY_PREFIX"], "links").state
    assert redis_client.hget(state, "status") == b"running"  # never declared done
