"""Seen-set cost per URL: the old SET, the exact seen-set and Bloom, through the push script.

    python bench/seen.py                               # 100,000 and 1,000,000 URLs x 3 runs, ~15 minutes
    python bench/seen.py --sizes 20000 --runs 1        # smoke test, under a minute
    python bench/seen.py --kinds exact,bloom           # leave out the old SET

Every run pushes N distinct URLs' fingerprints (SHA-1, as Scrapy's) through the frontier's
FLUSH script, in batches of ``--batch`` (the scheduler's flush size), on an embedded
redis-server of the bench's own (append-only file on, as users get it), and reports per
URL:

- bytes: ``MEMORY USAGE ... SAMPLES 0`` summed over the seen-set's keys (the old SET; the
  seen-set HASH; the Bloom blocks);
- push µs: the FLUSH script's Redis time (``INFO commandstats``, ``cmdstat_evalsha``
  usec over N), the whole push (enqueue included, which is the same for every kind);
- server µs: the redis-server's CPU (``INFO cpu`` user + system over N), which also counts
  writing the append-only file;
- AOF bytes: the append-only file's growth (automatic rewrites off during the run);
- for Bloom, the false-positive rate: N more fingerprints never pushed, checked without
  adding (``RedisFrontier.seen_add(add=False)``), against the configured rate and the
  filter's own estimate (``status()["seenset"]``). URLs dropped as false positives during
  the pushes are counted too.

"old SET" runs the FLUSH script as it was before the seen-set (``--legacy-rev``, read with
``git show``; the row is skipped, saying why, when that fails). Bloom runs twice: with
``FLEET_BLOOM_CAPACITY`` = N (the filter sized for the crawl) and with the default 10M.
Figures are medians over ``--runs``; each run starts from an empty crawl.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import redis  # noqa: E402

from scrapy_fleet.frontier.keys import CrawlKeys  # noqa: E402
from scrapy_fleet.frontier.queue import RedisFrontier  # noqa: E402
from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server  # noqa: E402

LEGACY_REV = "3a16dea"  # the last commit whose push step used the SET of 20-byte fingerprints
DEFAULT_CAPACITY = 10_000_000
HOSTS = 100


@dataclass
class Run:
    bytes_per_url: float
    push_usec: float
    server_usec: float
    aof_bytes: float
    fp_push: int = 0  # new URLs the push took for seen (Bloom false positives)
    fp_probe: float | None = None  # measured false-positive rate of never-seen fingerprints
    fp_estimate: float | None = None


def fingerprints(start: int, n: int) -> list[bytes]:
    return [hashlib.sha1(b"https://www.site%d.example/item-%d.html" % (i % 1000, i)).digest()
            for i in range(start, start + n)]


def legacy_flush(rev: str) -> str:
    """The FLUSH script of ``rev`` (its scripts.py has no imports of ours)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:scrapy_fleet/frontier/scripts.py"],
                            capture_output=True, text=True, check=True).stdout
    namespace: dict[str, Any] = {}
    exec(compile(source, f"{rev}:scripts.py", "exec"), namespace)  # noqa: S102 - our own history
    return namespace["FLUSH"]


def seen_bytes(client: redis.Redis, keys: CrawlKeys) -> int:
    names = [keys.seen.meta, keys.seen.legacy, *client.scan_iter(match=keys.seen.blocks_pattern, count=1000)]
    return sum(int(client.memory_usage(name, samples=0) or 0) for name in names)


def counters(client: redis.Redis) -> tuple[float, float, int]:
    """(EVALSHA usec, server CPU usec, AOF bytes) so far."""
    calls = client.info("commandstats").get("cmdstat_evalsha", {})
    cpu = client.info("cpu")
    aof = int(client.info("persistence").get("aof_current_size", 0))
    return float(calls.get("usec", 0)), (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6, aof


def settle(client: redis.Redis) -> None:
    """Compact the append-only file between runs (the runs turn automatic rewrites off)."""
    client.bgrewriteaof()
    while True:
        info = client.info("persistence")
        if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
            return
        time.sleep(0.1)


def run_once(client: redis.Redis, url: str, kind: str, n: int, batch: int, error_rate: float,
             legacy: str | None) -> Run:
    keys = CrawlKeys(f"bench-seen-{uuid.uuid4().hex[:8]}", "bench")
    mode = "exact" if kind in ("old SET", "exact") else "bloom"
    capacity = n if kind == "bloom, capacity N" else DEFAULT_CAPACITY
    frontier = RedisFrontier(client, keys, "w1", url=url, dupefilter=mode, bloom_capacity=capacity,
                             bloom_error_rate=error_rate)
    frontier.open(fresh=True)
    push: Callable[[list[bytes]], list[bool]]
    if kind == "old SET":
        assert legacy is not None
        push = legacy_pusher(client, frontier, legacy)
    else:
        def push(fps: list[bytes]) -> list[bool]:
            return frontier.flush([(fp, f"h{i % HOSTS}", 0, b"x") for i, fp in enumerate(fps)]).pushed
    fps = fingerprints(0, n)
    client.config_set("auto-aof-rewrite-percentage", 0)
    client.config_resetstat()
    usec0, cpu0, aof0 = counters(client)
    taken = 0
    for i in range(0, n, batch):
        taken += sum(push(fps[i:i + batch]))
    usec1, cpu1, aof1 = counters(client)
    result = Run(seen_bytes(client, keys) / n, (usec1 - usec0) / n, (cpu1 - cpu0) / n, (aof1 - aof0) / n,
                 fp_push=n - taken)
    if mode == "bloom":
        probes = fingerprints(n, n)
        hits = 0
        for i in range(0, n, 1000):
            hits += sum(frontier.seen_add(probes[i:i + 1000], add=False))
        result.fp_probe = hits / n
        result.fp_estimate = frontier.status()["seenset"]["bloom"]["fp_rate"]
    elif taken != n:
        raise SystemExit(f"{kind}: {n - taken} of {n} distinct URLs taken for duplicates")
    for key in list(client.scan_iter(match=keys.pattern, count=1000)):
        client.delete(key)  # DEL, not UNLINK: freed before the next run
    client.config_set("auto-aof-rewrite-percentage", 100)
    settle(client)
    return result


def legacy_pusher(client: redis.Redis, frontier: RedisFrontier, source: str) -> Callable[[list[bytes]], list[bool]]:
    """Pushes through the old FLUSH script, with its KEYS and ARGV."""
    script = client.register_script(source)
    k = frontier.keys
    keys = [k.ready, k.delayed, k.nextok, k.inflight, k.stats, k.payload,
            k.seq, k.seen.legacy, k.lease("w1"), k.workers, k.slot_delay, k.state]

    def push(fps: list[bytes]) -> list[bool]:
        args: list[Any] = [k.queue_prefix, frontier.cap, frontier.crawl_id, len(fps), 0, 0, 0, 0, "w1", 0, 0]
        for i, fp in enumerate(fps):
            args += [fp, f"h{i % HOSTS}", 0, b"x"]
        reply = script(keys=keys, args=args)
        return [bool(x) for x in reply[1]]

    return push


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="URLs per run, comma-separated")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="pushes per FLUSH call")
    parser.add_argument("--error-rate", type=float, default=0.001, help="FLEET_BLOOM_ERROR_RATE")
    parser.add_argument("--kinds", default="old SET,exact,bloom,bloom default",
                        help="old SET, exact, bloom (capacity N), bloom default (capacity 10M)")
    parser.add_argument("--legacy-rev", default=LEGACY_REV, help="the commit whose FLUSH the old SET row runs")
    args = parser.parse_args()
    kinds = [{"bloom": "bloom, capacity N", "bloom default": "bloom, capacity 10M"}.get(k.strip(), k.strip())
             for k in args.kinds.split(",")]
    legacy = None
    if "old SET" in kinds:
        try:
            legacy = legacy_flush(args.legacy_rev)
        except (OSError, subprocess.CalledProcessError, KeyError, SyntaxError, ImportError) as exc:
            print(f"old SET skipped: cannot read FLUSH of {args.legacy_rev} ({exc})\n")
            kinds.remove("old SET")
    data_dir = tempfile.mkdtemp(prefix="bench-seen-")
    url = ensure_embedded_server(data_dir)
    client = connect(url)
    print(f"batches of {args.batch}, Bloom error rate {args.error_rate}, {args.runs} runs (medians), "
          f"redis-server {client.info('server')['redis_version']} ({client.info('memory')['mem_allocator']})\n")
    header = (f"{'seen-set':<20} {'URLs':>9} {'bytes/URL':>10} {'push µs/URL':>12} {'server µs/URL':>14} "
              f"{'AOF B/URL':>10} {'FP in push':>11} {'FP measured':>12} {'FP estimated':>13}")
    print(header)
    print("-" * len(header))
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            for kind in kinds:
                runs = [run_once(client, url, kind, n, args.batch, args.error_rate, legacy)
                        for _ in range(args.runs)]

                def med(get: Callable[[Run], Any]) -> float:
                    return statistics.median(get(r) for r in runs)

                bloom = runs[0].fp_probe is not None
                print(f"{kind:<20} {n:>9,} {med(lambda r: r.bytes_per_url):>10.1f} "
                      f"{med(lambda r: r.push_usec):>12.1f} {med(lambda r: r.server_usec):>14.1f} "
                      f"{med(lambda r: r.aof_bytes):>10.0f} {med(lambda r: r.fp_push):>11.0f} "
                      + (f"{med(lambda r: r.fp_probe):>12.5f} {med(lambda r: r.fp_estimate):>13.5f}"
                         if bloom else f"{'-':>12} {'-':>13}"), flush=True)
    finally:
        client.close()
        stop_embedded_server(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
