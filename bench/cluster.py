"""Cluster benchmark: the frontier on one Redis node against a split crawl on 3 masters.

    python bench/cluster.py                      # 20,000 requests, 3 runs each, ~1-2 minutes
    python bench/cluster.py --requests 5000 --runs 1

One process drives ``RedisFrontier`` as a worker does, on the same requests in each
setup: push in batches of 64 (a request per host of 500, 10% duplicates), then lease 64
and acknowledge them, until the crawl ends (``check_finished``). Setups, alternated run by
run so that machine noise hits all alike:

- ``one node``: one redis-server (TCP loopback, no persistence), the crawl unsplit (1
  partition), as every crawl on one Redis;
- ``one node, 16 partitions``: the same server, the crawl split as on a cluster (what the
  split itself costs: more, smaller script calls);
- ``cluster``: a local 3-master Redis Cluster (tests/cluster.py), 16 partitions (auto).

For each: requests/s (median), Redis CPU per request (``used_cpu_user+sys`` of every node,
as a delta, divided by the requests), and for the cluster the share of script calls
(EVALSHA) and of the crawl's keys on each master. One client process on a 2-core machine
bounds what this shows: the cluster's gain is capacity (each master's core and memory
serve a share of the crawl), measured here as the split of work, not as the rate of one
client.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/cluster.py: the local cluster the tests use

import redis  # noqa: E402

from cluster import LocalCluster, cluster_ports  # noqa: E402
from scrapy_fleet.frontier.keys import CrawlKeys  # noqa: E402
from scrapy_fleet.frontier.queue import RedisFrontier  # noqa: E402
from scrapy_fleet.redis_server import connect, find_redis_server  # noqa: E402

HOSTS = 500
BATCH = 64


def requests(n: int) -> list[tuple[bytes, str, int, bytes]]:
    out = []
    for i in range(n):
        k = i if i % 10 else max(0, i - 5)  # every tenth repeats an earlier URL
        url = f"https://host{k % HOSTS}.example/page/{k}"
        out.append((uuid.uuid5(uuid.NAMESPACE_URL, url).bytes + b"\0" * 4, f"host{k % HOSTS}.example",
                    0, url.encode() * 3))
    return out


def cpu(nodes: list[redis.Redis]) -> float:
    used = [node.info("cpu") for node in nodes]
    return sum(info["used_cpu_user"] + info["used_cpu_sys"] for info in used)


def calls(node: redis.Redis) -> int:
    stats = node.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


def run(url: str, nodes: list[redis.Redis], partitions: int | None, n: int) -> dict[str, Any]:
    keys = CrawlKeys(f"bench{uuid.uuid4().hex[:8]}", "bench")
    frontier = RedisFrontier(connect(url), keys, "w1", url=url, concurrency_per_slot=1000,
                             partitions=partitions)
    frontier.open(fresh=True)
    frontier.set_seeding(True)
    work = requests(n)
    cpu0, calls0 = cpu(nodes), [calls(node) for node in nodes]
    start = time.perf_counter()
    for i in range(0, len(work), BATCH):
        frontier.flush(work[i:i + BATCH])
    frontier.set_seeding(False)
    # where the queued crawl sits (at the end, its queues are gone); not timed
    counting = time.perf_counter()
    share = [(sum(1 for _ in node.scan_iter(match=keys.partitions_pattern, count=1000))
              + sum(1 for _ in node.scan_iter(match=keys.pattern, count=1000))) for node in nodes]
    counted = time.perf_counter() - counting
    done = 0
    while True:
        popped = frontier.flush(pop=BATCH).popped
        if not popped:
            if frontier.check_finished().finished:
                break
            continue
        frontier.flush(acks=[lease for lease, _ in popped])
        done += len(popped)
    elapsed = time.perf_counter() - start - counted
    split = [calls(node) - c for node, c in zip(nodes, calls0)]
    cpu_us = (cpu(nodes) - cpu0) / done * 1e6
    frontier.wipe()
    frontier.client.close()
    return {"rate": done / elapsed, "cpu_us": cpu_us, "calls": split, "keys": share, "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = cluster_ports(1)[0]
        single = subprocess.Popen([find_redis_server(), "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", tmp],
                                  stdout=subprocess.DEVNULL)
        nodes = LocalCluster(Path(tmp) / "cluster", cluster_ports(3)).start()
        try:
            one = redis.Redis(port=port)
            for _ in range(100):
                try:
                    one.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            masters = [redis.Redis(port=p) for p in nodes.ports]
            setups = {"one node": (f"redis://127.0.0.1:{port}/0", [one], 1),
                      "one node, 16 partitions": (f"redis://127.0.0.1:{port}/0", [one], 16),
                      "cluster (3 masters, 16 partitions)": (nodes.urls[0], masters, None)}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
            for _ in range(args.runs):
                for name, (url, used, partitions) in setups.items():
                    results[name].append(run(url, used, partitions, args.requests))
        finally:
            nodes.stop()
            single.terminate()
            single.wait()
    print(f"{args.requests} requests ({HOSTS} hosts, 10% duplicates), medians of {args.runs} runs")
    base = statistics.median(r["rate"] for r in results["one node"])
    for name, rows in results.items():
        rate = statistics.median(r["rate"] for r in rows)
        cpu_us = statistics.median(r["cpu_us"] for r in rows)
        print(f"  {name:36s} {rate:8.0f} req/s ({rate / base:.2f}x)  Redis CPU {cpu_us:5.1f} µs/req")
        if len(rows[-1]["calls"]) > 1:
            total = sum(rows[-1]["calls"]) or 1
            keys = sum(rows[-1]["keys"]) or 1
            print("    script calls per master: " + ", ".join(
                f"{c / total:.0%}" for c in rows[-1]["calls"]) + "   keys per master: " + ", ".join(
                f"{k / keys:.0%}" for k in rows[-1]["keys"]))


if __name__ == "__main__":
    main()
