"""Redis memory per queued request: the stored request formats side by side, same run.

    python bench/queued.py                 # 100,000 requests x 3 runs, about a minute
    python bench/queued.py --requests 20000 --runs 1

Pushes N requests through the frontier's FLUSH script (no pops), as a crawl queues the
links it finds, and reports per request the redis-server ``used_memory`` delta less the
seen-set, and the sum of ``MEMORY USAGE ... SAMPLES 0`` over the crawl's other keys (the
seen-set's own figure on its last line); medians over runs. Two kinds
of request: a bare link (``Request(url, callback=parse)``) and a link as a spider's
middlewares leave it (a ``Referer`` header and ``meta={"depth": 2}``). Each is stored in
the first format (``SF1`` + msgpack of ``Request.to_dict``: field names and defaults) and in
today's compact format (``scrapy_fleet.frontier.codec``), on the same embedded server.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402
from scrapy import Request, Spider  # noqa: E402

from scrapy_fleet.frontier import codec  # noqa: E402
from scrapy_fleet.frontier.keys import CrawlKeys  # noqa: E402
from scrapy_fleet.frontier.queue import RedisFrontier  # noqa: E402
from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server  # noqa: E402


class BenchSpider(Spider):
    name = "bench"

    def parse(self, response):  # the callback every request carries
        pass


def urls(n: int, hosts: int = 1000) -> list[str]:
    # the same URL shape as bench/frontier.py: 66 characters on average
    return [f"https://www.site{i % hosts}.example/catalog/{i // hosts}/item-{i}.html?ref=list&p={i % 7}"
            for i in range(n)]


def requests(kind: str, links: list[str], spider: Spider) -> list[Request]:
    if kind == "bare":
        return [Request(u, callback=spider.parse) for u in links]
    return [Request(u, callback=spider.parse, meta={"depth": 2}, headers={"Referer": links[i - 1]})
            for i, u in enumerate(links)]


def blobs(fmt: str, reqs: list[Request], spider: Spider) -> list[bytes]:
    if fmt == "SF1 (to_dict)":
        return [codec.MAGIC_V1 + msgpack.packb(r.to_dict(spider=spider), use_bin_type=True) for r in reqs]
    return [codec.encode(r, spider) for r in reqs]


def queued_bytes(url: str, stored: list[bytes], reqs: list[Request]) -> tuple[float, float, float]:
    """Per request: (used_memory delta less the seen-set, MEMORY USAGE of the crawl's keys
    but the seen-set, MEMORY USAGE of the seen-set)."""
    client = connect(url)
    keys = CrawlKeys(f"bench-queued-{uuid.uuid4().hex[:8]}", "bench")
    frontier = RedisFrontier(client, keys, "w1", url=url)
    frontier.open(fresh=True)
    before = client.info("memory")["used_memory"]
    batch = 500
    for i in range(0, len(stored), batch):
        frontier.flush([(str(n).encode(), r.url.split("/")[2], 0, b)
                        for n, (r, b) in enumerate(zip(reqs[i:i + batch], stored[i:i + batch]), i)])
    after = client.info("memory")["used_memory"]
    seen = client.memory_usage(keys.seen.meta, samples=0) or 0
    others = 0
    for key in client.scan_iter(match=keys.pattern, count=1000):
        if key != keys.seen.meta.encode():
            others += client.memory_usage(key, samples=0) or 0
            client.delete(key)  # DEL, not UNLINK: freed before the next run's baseline
    client.delete(keys.seen.meta)
    n = len(stored)
    return (after - before - seen) / n, others / n, seen / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    spider = BenchSpider()
    links = urls(args.requests)
    data_dir = tempfile.mkdtemp(prefix="bench-queued-")
    url = ensure_embedded_server(data_dir)
    try:
        print(f"{args.requests} requests, URLs of {statistics.mean(map(len, links)):.1f} characters "
              f"on average, {args.runs} runs (medians)\n")
        print(f"{'request':<8} {'format':<16} {'payload B':>10} {'used_memory B/req':>18} "
              f"{'MEMORY USAGE B/req':>19}")
        seen_rows = []
        for kind in ("bare", "link"):
            reqs = requests(kind, links, spider)
            for fmt in ("SF1 (to_dict)", "compact"):
                stored = blobs(fmt, reqs, spider)
                runs = [queued_bytes(url, stored, reqs) for _ in range(args.runs)]
                seen_rows.append(statistics.median(s for _, _, s in runs))
                print(f"{kind:<8} {fmt:<16} {statistics.mean(map(len, stored)):>10.1f} "
                      f"{statistics.median(q for q, _, _ in runs):>18.1f} "
                      f"{statistics.median(m for _, m, _ in runs):>19.1f}")
        print(f"\nseen-set (not counted above): {statistics.median(seen_rows):.1f} B per request")
    finally:
        stop_embedded_server(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
