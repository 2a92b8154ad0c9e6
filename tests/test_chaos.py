"""Chaos: everything at once against one ``scrapy fleet -n 3`` crawl (issue 8).

While three workers crawl a few hundred local pages, one worker is SIGKILLed, another is
SIGSTOPped until its lease runs out (its requests go to the others) and then resumed,
Redis is restarted once, and junk is written into the crawl's keys. The crawl must still
end with exit 0, one JSON line per page (no page missing, none twice, every line whole),
and the frontier's gauges exactly 0. Each step waits on an event, never on a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from conftest import Fleet, OwnRedis, fleet_args, make_project, wait_for
from local_site import LinkedSite
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.redis_server import connect

pytestmark = pytest.mark.slow  # a real `scrapy fleet -n 3`

PAGES = 300


@pytest.fixture
def site(serve):
    # slow enough that the crawl is still running through every step below
    return serve(LinkedSite(PAGES, delay=0.15))


def worker_pids(fleet: Fleet) -> dict[int, int]:
    found = re.search(r"workers started \(([^)]*)\)", fleet.text)
    return {int(slot): int(pid) for slot, pid in re.findall(r"(\d+): pid (\d+)", found.group(1))} \
        if found else {}


def test_kill_stop_restart_and_junk_lose_nothing(tmp_path: Path, site, own_redis: OwnRedis,
                                                 key_prefix: str):
    output = tmp_path / "out" / "links.jsonl"
    settings = {
        "REDIS_URL": own_redis.url,
        "FLEET_KEY_PREFIX": key_prefix,
        "FLEET_DATA_DIR": str(tmp_path / ".fleet"),
        "FLEET_LEASE_TIMEOUT": "3",
        "FLEET_REDIS_RETRY_TIMEOUT": "60",
        "FLEET_PROGRESS_INTERVAL": "1",
        "CONCURRENT_REQUESTS_PER_DOMAIN": "6",
        "ITEM_PIPELINES": json.dumps({"scrapy_fleet.pipelines.JsonLinesPipeline": 800}),
        "FLEET_OUTPUT": str(tmp_path / "out" / "%(name)s.jsonl"),
    }
    keys = CrawlKeys(key_prefix, "links")
    fleet = Fleet(make_project(tmp_path), fleet_args(site.url, settings, "-n", "3",
                                                     "--max-restarts", "5"))
    pids = wait_for(lambda: worker_pids(fleet), what="the workers to start")
    fetched = lambda n: lambda: len(site.page_fetches()) >= n  # noqa: E731

    # 1. SIGKILL a worker mid-crawl: the launcher restarts it, its leases are reclaimed
    wait_for(fetched(30), what="30 pages")
    os.kill(pids[1], signal.SIGKILL)

    # 2. SIGSTOP another past its lease: the others reclaim its requests; then resume it
    wait_for(fetched(70), what="70 pages")
    os.kill(pids[2], signal.SIGSTOP)
    client = connect(own_redis.url)
    frozen = f":{pids[2]}:"
    wait_for(lambda: not any(frozen in w.decode("utf-8", "replace")
                             for w in client.zrange(keys.workers, 0, -1)),
             what="the frozen worker's leases to be reclaimed")
    os.kill(pids[2], signal.SIGCONT)

    # 3. restart Redis once (it keeps its append-only file)
    wait_for(fetched(120), what="120 pages")
    client.close()
    own_redis.stop()
    own_redis.start()

    # 4. junk in the keys, as another tool might write it
    client = connect(own_redis.url)
    client.zadd(keys.queue("127.0.0.1"), {b"junk": -1e15, b"\xff\xfe": -1e15})
    client.zadd(keys.ready, {"127.0.0.1": -1e15})
    client.hset(keys.stats, "download_errors", "garbage")
    client.zadd(keys.workers, {b"\xc3\x28not-utf8": 0})
    client.hset(keys.lease("ghost"), "99", "not a lease")
    client.zadd(keys.workers, {"ghost": 0})

    assert fleet.wait(timeout=300) == 0, fleet.text
    text = fleet.text
    assert "finished: the frontier is empty and no worker holds work" in text
    assert "died with signal 9 (SIGKILL); restarting" in text

    raw = output.read_bytes()
    assert raw.endswith(b"\n")
    urls = [json.loads(line)["url"] for line in raw.decode("utf-8").splitlines()]
    expected = {f"{site.url}/page/{i}" for i in range(PAGES)}
    assert set(urls) == expected, f"missing: {sorted(expected - set(urls))[:10]}"
    assert len(urls) == PAGES, "a page has more than one item line"

    stats = client.hgetall(keys.stats)
    assert (stats[b"pending"], stats[b"leased"]) == (b"0", b"0")
    assert int(stats[b"invalid"]) >= 2 and int(stats[b"corrupt"]) >= 1
    assert int(stats[b"reclaimed"]) >= 1
    client.close()
