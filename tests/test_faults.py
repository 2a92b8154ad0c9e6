"""Faults a user can cause or suffer (issue 8): each ends in a completed crawl, or in one
clear message and a non-zero exit with nothing lost. Real Redis, real processes.

Rows of docs/guarantees.md that are about the frontier live here; the output file's
faults are in test_pipelines.py, the codec's and the embedded server's in their own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from conftest import REPO, OwnRedis, crawl_under_way, run_link_spider, runspider_args, scrapy, scrapy_args
from local_site import LinkedSite
from scrapy_fleet.config import FleetConfig
from scrapy_fleet.errors import EXIT_FATAL
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.launcher import print_status
from scrapy_fleet.redis_server import connect

PAGES = 200


@pytest.fixture
def site(serve):
    return serve(LinkedSite(PAGES, delay=0.02))


def all_pages() -> set[str]:
    return {f"/page/{i}" for i in range(PAGES)}


def keys_of(settings: dict[str, str]) -> CrawlKeys:
    return CrawlKeys(settings["FLEET_KEY_PREFIX"], "links")


def gauges(client: redis.Redis, keys: CrawlKeys) -> tuple[bytes | None, bytes | None]:
    pending, leased = client.hmget(keys.stats, "pending", "leased")
    return pending, leased


def resumable(client: redis.Redis, keys: CrawlKeys) -> None:
    """An unfinished crawl for the next worker to resume, as another run left it."""
    client.hset(keys.state, mapping={"status": "running", "started_at": "0"})


# --- junk in the keys ------------------------------------------------------------------


@pytest.mark.slow
def test_junk_queue_members_are_dropped_counted_and_the_crawl_ends(
        tmp_path: Path, site, fleet_settings, redis_client):
    keys = keys_of(fleet_settings)
    slot = "127.0.0.1"
    resumable(redis_client, keys)
    # what another tool might write: an ASCII word and bytes that are not UTF-8
    redis_client.zadd(keys.queue(slot), {b"junk": -1e15, b"\xff\xfe\x00bad": -1e15})
    redis_client.zadd(keys.ready, {slot: -1e15})

    worker = run_link_spider(tmp_path, f"{site.url}/page/0", fleet_settings)
    assert worker.finish() == 0, worker.text[-3000:]

    assert set(site.page_fetches()) == all_pages()
    assert worker.stat("fleet/invalid") == 2
    assert int(redis_client.hget(keys.stats, "invalid")) == 2
    assert gauges(redis_client, keys) == (b"0", b"0")
    assert "UnicodeDecodeError" not in worker.text


@pytest.mark.slow
def test_junk_in_stats_workers_and_leases_is_survived(tmp_path: Path, site, fleet_settings,
                                                       redis_client):
    keys = keys_of(fleet_settings)
    resumable(redis_client, keys)
    redis_client.hset(keys.stats, mapping={"pending": "lots", "pages": "many", "acked": "1e3x"})
    redis_client.hset(keys.state, mapping={"started_at": "yesterday", "finished_at": b"\xff"})
    redis_client.zadd(keys.workers, {b"\xff\xfeghost": 0, b"future-ghost": 9e15})
    redis_client.hset(keys.lease("ghost"), mapping={"7": "junk", "x": "1 slot"})
    redis_client.zadd(keys.workers, {"ghost": 0})  # dead: its leases get reclaimed

    # --status and the launcher's reader never crash on it
    config = FleetConfig(redis_url=fleet_settings["REDIS_URL"],
                         key_prefix=fleet_settings["FLEET_KEY_PREFIX"])
    out = tmp_path / "status.txt"
    with open(out, "w") as f:
        assert print_status("links", config, out=f) == 0
        assert print_status("links", config, as_json=True, out=f) == 0
    assert "\\xff\\xfeghost" in out.read_text()

    worker = run_link_spider(tmp_path, f"{site.url}/page/0", fleet_settings)
    assert worker.finish() == 0, worker.text[-3000:]
    assert set(site.page_fetches()) == all_pages()
    assert gauges(redis_client, keys) == (b"0", b"0")
    stats = redis_client.hgetall(keys.stats)
    assert int(stats[b"corrupt"]) >= 3  # the gauges, the acked total, the lease entries
    assert int(stats[b"pages"]) >= PAGES - 1  # restarted from junk, then counted
    assert not redis_client.exists(keys.lease("ghost"))
    assert redis_client.zscore(keys.workers, b"future-ghost") is None


def test_a_persistent_error_in_the_tick_stops_the_worker_clearly(redis_url, key_prefix):
    """Any exception: logged and retried; if it persists, the worker stops (no hang)."""
    from scrapy.statscollectors import MemoryStatsCollector

    from scrapy_fleet.frontier.dupefilter import FleetDupeFilter
    from scrapy_fleet.frontier.scheduler import FleetScheduler

    class Crawler:  # just what MemoryStatsCollector reads
        class settings:  # noqa: N801
            @staticmethod
            def getbool(name, default=False):
                return default

    scheduler = FleetScheduler(
        config=FleetConfig(redis_url=redis_url, key_prefix=key_prefix, redis_retry_timeout=0.2),
        dupefilter=FleetDupeFilter(fingerprinter=None),
        stats=MemoryStatsCollector(Crawler()),
    )
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("something nobody foresaw")

    scheduler._guarded(broken)  # logged, not raised, not fatal yet
    assert scheduler.fatal is None
    time.sleep(0.25)
    scheduler._guarded(broken)
    assert scheduler.fatal is not None and "something nobody foresaw" in scheduler.fatal
    assert scheduler.fatal_status == EXIT_FATAL
    scheduler._guarded(broken)  # stopping: not retried again
    assert len(calls) == 2


# --- Redis losing the crawl's data -------------------------------------------------------


@pytest.mark.slow
def test_flushall_mid_crawl_stops_the_worker_naming_the_lost_state(
        tmp_path: Path, site, own_redis: OwnRedis, key_prefix):
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix}
    worker = crawl_under_way(tmp_path, site, settings, pages=20)
    connect(own_redis.url).flushall()

    assert worker.finish() == EXIT_FATAL, worker.text[-3000:]
    assert "was lost" in worker.text and "the crawl state is gone" in worker.text
    assert len(site.page_fetches()) < PAGES  # it stopped; it did not idle or fake an end


@pytest.mark.slow
def test_evicted_queue_is_reported_as_lost_not_finished(tmp_path: Path, site, own_redis: OwnRedis,
                                                        key_prefix):
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix,
                "CONCURRENT_REQUESTS": "2"}
    keys = keys_of(settings)
    client = connect(own_redis.url)
    worker = crawl_under_way(tmp_path, site, settings, pages=20)
    # what allkeys-lru eviction does: whole keys vanish (here the payloads and a queue)
    client.delete(keys.payload, keys.queue("127.0.0.1"))

    assert worker.finish() == EXIT_FATAL, worker.text[-3000:]
    assert "was lost" in worker.text
    assert "Spider closed (finished)" not in worker.text


@pytest.mark.slow
def test_a_redis_that_can_lose_data_is_warned_about(tmp_path: Path, site, own_redis: OwnRedis,
                                                    key_prefix):
    client = connect(own_redis.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    client.config_set("appendonly", "no")
    client.config_set("save", "")
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix}
    worker = run_link_spider(tmp_path, f"{site.url}/page/0", settings)
    assert worker.finish() == 0, worker.text[-3000:]
    assert "evicts keys when full (maxmemory-policy allkeys-lru)" in worker.text
    assert "has no persistence" in worker.text


# --- Redis full --------------------------------------------------------------------------


@pytest.mark.slow
def test_out_of_memory_stops_clearly_and_the_same_command_resumes(
        tmp_path: Path, site, own_redis: OwnRedis, key_prefix):
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix,
                "FLEET_REDIS_RETRY_TIMEOUT": "2"}
    keys = keys_of(settings)
    client = connect(own_redis.url)
    worker = crawl_under_way(tmp_path, site, settings, pages=20)
    # well below what it uses: what acks free cannot bring it back under the limit
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)

    assert worker.finish() == EXIT_FATAL, worker.text[-3000:]
    assert "is out of memory (used" in worker.text and "of maxmemory" in worker.text
    assert client.hget(keys.state, b"status") == b"running"
    assert gauges(client, keys)[1] == b"0"  # it handed back what it held, despite the OOM
    assert client.zcard(keys.workers) == 0

    client.config_set("maxmemory", 0)
    again = run_link_spider(tmp_path, f"{site.url}/page/0", settings)
    assert again.finish() == 0, again.text[-3000:]
    assert set(site.page_fetches()) == all_pages()
    assert gauges(client, keys) == (b"0", b"0")


# --- who may use the crawl ---------------------------------------------------------------


@pytest.mark.slow
def test_a_wrong_password_fails_at_once(tmp_path: Path, own_redis: OwnRedis):
    connect(own_redis.url).config_set("requirepass", "right")
    url = own_redis.url.replace("unix://", "unix://:wrong@")
    started = time.monotonic()
    try:
        worker = run_link_spider(tmp_path, "http://127.0.0.1:9/", {"REDIS_URL": url})
        code = worker.finish(timeout=30)
    finally:  # so that the fixture can stop the server
        connect(own_redis.url.replace("unix://", "unix://:right@")).config_set("requirepass", "")
    assert code != 0
    assert time.monotonic() - started < 8  # not the 10 s retry deadline
    assert "refused the password" in worker.text
    assert "unreachable" not in worker.text


@pytest.mark.slow
def test_another_spider_with_the_same_name_refuses_to_join(tmp_path: Path, site, fleet_settings):
    first = crawl_under_way(tmp_path, site, fleet_settings, pages=5)
    other = scrapy(tmp_path, *runspider_args("otherlinks.py", fleet_settings,
                                             {"start_url": f"{site.url}/page/0"}))
    assert other.returncode != 0
    assert "made by linkspider.LinkSpider, not otherlinks.LinkSpider" in other.stderr + other.stdout
    assert "FLEET_KEY_PREFIX" in other.stderr + other.stdout
    assert first.finish() == 0
    assert set(site.page_fetches()) == all_pages()


# --- start requests that cannot be made --------------------------------------------------


@pytest.mark.slow
def test_an_unreadable_list_fails_scrapy_crawl(tmp_path: Path, fleet_settings):
    proc = scrapy(REPO, "crawl", "alexa", "-a", f"list={tmp_path / 'missing.csv'}",
                  *scrapy_args({**fleet_settings, "FLEET_OUTPUT": str(tmp_path / "out.jsonl")}))
    assert proc.returncode == EXIT_FATAL, proc.stderr[-3000:]
    assert f"cannot read the list {tmp_path / 'missing.csv'}" in proc.stderr
    assert "Spider closed (finished)" not in proc.stderr


@pytest.mark.slow
def test_an_unreadable_list_fails_scrapy_fleet_with_the_error_on_the_terminal(
        tmp_path: Path, fleet_settings):
    missing = tmp_path / "missing.csv"
    proc = scrapy(REPO, "fleet", "alexa", "-n", "2", "-a", f"list={missing}", "--logdir",
                  str(tmp_path / "logs"),
                  *scrapy_args({**fleet_settings, "FLEET_OUTPUT": str(tmp_path / "out.jsonl")}),
                  timeout=180)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert f"cannot read the list {missing}" in proc.stdout
    assert "finished: the frontier is empty" not in proc.stdout
