"""Frontier benchmark: scrapy-fleet's FleetScheduler against scrapy-redis, same Redis, same run.

    python bench/frontier.py                    # 20,000 requests, 3 runs, ~2-4 minutes
    python bench/frontier.py --requests 5000 --runs 1 --no-profile --no-memory   # quick look

What is timed, for both schedulers, on the same freshly built ``Request`` objects:
enqueue (``enqueue_request`` of N distinct requests plus ``--dup`` duplicates, shuffled in)
+ dedupe + dequeue (``next_request`` until it returns None). For scrapy-fleet the timed
work also includes acknowledging every request the way the engine would
(``_finished_request``) and the final ``_flush`` that sends the last acks.

Both run against the same redis-server binary (``find_redis_server()``): the embedded
server on a unix socket (``ensure_embedded_server``, persistence on, as users get it) and a
second server on TCP loopback (no persistence). Runs alternate between the
implementations so that machine noise hits both alike; the figure is the median.

Round trips are counted by wrapping redis-py's ``send_packed_command`` (every command or
pipeline sent is one write followed by one wait for the reply) and divided by N.

Bytes per fingerprint: MEMORY USAGE of each run's seen-set / its count, and the ``used_memory``
delta of 100,000 fingerprints stored in each format (plus variants that would shrink it).

scrapy-redis is a bench-only dependency: ``pip install -e .[bench]`` or
``pip install scrapy-redis``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import logging
import math
import os
import platform
import pstats
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
import redis.connection  # noqa: E402
import scrapy  # noqa: E402
from scrapy import Request, Spider  # noqa: E402
from scrapy.crawler import Crawler  # noqa: E402
from scrapy.utils.reactor import install_reactor  # noqa: E402

from scrapy_fleet.config import FleetConfig  # noqa: E402
from scrapy_fleet.frontier.dupefilter import FleetDupeFilter  # noqa: E402
from scrapy_fleet.frontier.keys import CrawlKeys, SeenKeys  # noqa: E402
from scrapy_fleet.frontier.scheduler import FleetScheduler  # noqa: E402
from scrapy_fleet.redis_server import (  # noqa: E402
    ensure_embedded_server,
    find_redis_server,
    stop_embedded_server,
)

REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
TARGET_RATIO = 8.0
TARGET_BYTES = 64.0
SPIDER = "bench"


class BenchSpider(Spider):
    name = SPIDER

    def parse(self, response: Any) -> None:  # the callback every request carries
        pass


# --- round-trip counting -----------------------------------------------------------

class RoundTrips:
    """Counts client->server round trips: one per send_packed_command (a command, or a
    whole pipeline / MULTI..EXEC block, written and then answered)."""

    count = 0
    enabled = False

    @classmethod
    def install(cls) -> None:
        for klass in {redis.connection.AbstractConnection, redis.connection.Connection,
                      redis.connection.UnixDomainSocketConnection}:
            original = klass.__dict__.get("send_packed_command")
            if original is None or getattr(original, "_bench_wrapped", False):
                continue

            def wrapped(self: Any, *args: Any, _orig: Callable = original, **kw: Any) -> Any:
                if RoundTrips.enabled:
                    RoundTrips.count += 1
                return _orig(self, *args, **kw)

            wrapped._bench_wrapped = True  # type: ignore[attr-defined]
            setattr(klass, "send_packed_command", wrapped)


# --- the workload ------------------------------------------------------------------

def workload(n: int, dup_fraction: float, hosts: int, seed: int = 7) -> list[tuple[str, int]]:
    """(url, priority) pairs: n distinct URLs over `hosts` hosts, plus duplicates mixed in."""
    rng = random.Random(seed)
    distinct = [
        (f"https://www.site{i % hosts}.example/catalog/{i // hosts}/item-{i}.html?ref=list&p={i % 7}",
         0 if i % 10 else 1)
        for i in range(n)
    ]
    items = distinct + [rng.choice(distinct) for _ in range(int(n * dup_fraction))]
    rng.shuffle(items)
    return items


def build_requests(items: list[tuple[str, int]], spider: Spider) -> list[Request]:
    # fresh objects for every run: Scrapy caches fingerprints per Request object
    return [Request(url, callback=spider.parse, priority=prio) for url, prio in items]


# --- the two implementations ---------------------------------------------------------

@dataclass
class RunResult:
    impl: str
    transport: str
    seconds: float
    dequeued: int
    round_trips: int
    server_usec: int
    seen_bytes: int
    seen_card: int
    run: int = 0

    @property
    def rate(self) -> float:
        return self.dequeued / self.seconds


def _crawler(settings: dict[str, Any]) -> Crawler:
    crawler = Crawler(BenchSpider, {"LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False, **settings})
    crawler._apply_settings()
    crawler.spider = crawler._create_spider()
    return crawler


def _seen_memory(client: redis.Redis, seen: SeenKeys | str) -> tuple[int, int]:
    """A seen-set's bytes and fingerprint count: ours (one HASH: seenset.py), or
    scrapy-redis's SET."""
    if isinstance(seen, str):
        return int(client.memory_usage(seen, samples=0) or 0), int(client.scard(seen))
    return (int(client.memory_usage(seen.meta, samples=0) or 0),
            int(client.hget(seen.meta, "n") or 0))


def _server_cpu(client: redis.Redis) -> float:
    """CPU seconds the redis-server process has used (user + system: Lua, commands, I/O).
    (INFO commandstats would count a script's inner commands twice: inside EVALSHA/EXEC
    and on their own.)"""
    cpu = client.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _drop(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i:i + 500])


def run_fleet(url: str, transport: str, items: list[tuple[str, int]], n: int,
              profile: cProfile.Profile | None = None, local_seen: int = FleetConfig.local_seen,
              ) -> RunResult:
    prefix = f"bench-fleet-{uuid.uuid4().hex[:8]}"
    crawler = _crawler({})
    spider = crawler.spider
    scheduler = FleetScheduler(
        config=FleetConfig(redis_url=url, key_prefix=prefix, local_seen=local_seen),
        dupefilter=FleetDupeFilter(fingerprinter=crawler.request_fingerprinter),
        stats=crawler.stats,
        crawler=None,
    )
    scheduler.open(spider)
    if scheduler._tick is not None and scheduler._tick.running:
        scheduler._tick.stop()  # no reactor runs here; everything is called directly
    requests = build_requests(items, spider)
    dequeued = 0
    client = scheduler.frontier.client  # type: ignore[union-attr]
    cpu_before = _server_cpu(client)

    RoundTrips.count, RoundTrips.enabled = 0, True
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    for request in requests:
        scheduler.enqueue_request(request)
    while True:
        request = scheduler.next_request()
        if request is None:
            break
        dequeued += 1
        scheduler._finished_request(None, request, None)  # the engine is done with it: ack
    scheduler._flush()
    seconds = time.perf_counter() - started
    if profile is not None:
        profile.disable()
    RoundTrips.enabled = False
    trips = RoundTrips.count
    usec = int((_server_cpu(client) - cpu_before) * 1e6)

    keys = CrawlKeys(prefix, SPIDER)
    stats = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
    seen_bytes, seen_card = _seen_memory(client, keys.seen)
    if dequeued != n or stats.get("pending", 0) or stats.get("leased", 0) or stats.get("acked") != n:
        raise SystemExit(f"scrapy-fleet run incomplete: dequeued {dequeued} of {n}, redis stats {stats}")
    _drop(client, keys.pattern)
    scheduler.close("finished")
    impl = "scrapy-fleet" if local_seen else "scrapy-fleet, no local seen-cache"
    return RunResult(impl, transport, seconds, dequeued, trips, usec, seen_bytes, seen_card)


def run_scrapy_redis(url: str, transport: str, items: list[tuple[str, int]], n: int) -> RunResult:
    from scrapy_redis.scheduler import Scheduler

    prefix = f"bench-sr-{uuid.uuid4().hex[:8]}"
    crawler = _crawler({
        "REDIS_URL": url,
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",  # as its README says
        "SCHEDULER_QUEUE_KEY": f"{prefix}:%(spider)s:requests",
        "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:%(spider)s:dupefilter",
        "SCHEDULER_PERSIST": True,  # we measure the seen-set after the run, then drop it
    })
    spider = crawler.spider
    scheduler = Scheduler.from_crawler(crawler)
    scheduler.open(spider)
    requests = build_requests(items, spider)
    dequeued = 0
    client = scheduler.server
    cpu_before = _server_cpu(client)

    RoundTrips.count, RoundTrips.enabled = 0, True
    started = time.perf_counter()
    for request in requests:
        scheduler.enqueue_request(request)
    while True:
        request = scheduler.next_request()
        if request is None:
            break
        dequeued += 1
    seconds = time.perf_counter() - started
    RoundTrips.enabled = False
    trips = RoundTrips.count
    usec = int((_server_cpu(client) - cpu_before) * 1e6)

    seen_bytes, seen_card = _seen_memory(client, scheduler.df.key)
    if dequeued != n:
        raise SystemExit(f"scrapy-redis run incomplete: dequeued {dequeued} of {n}")
    scheduler.close("finished")
    _drop(client, f"{prefix}:*")
    client.close()
    return RunResult("scrapy-redis", transport, seconds, dequeued, trips, usec, seen_bytes, seen_card)


# --- per-request client-side costs ---------------------------------------------------------

def component_costs(items: list[tuple[str, int]]) -> list[tuple[str, float]]:
    """Microseconds per request of the pure-Python steps both schedulers go through."""
    import pickle

    from scrapy_fleet.frontier import codec
    from scrapy_redis.dupefilter import RFPDupeFilter

    crawler = _crawler({})
    spider = crawler.spider
    rows: list[tuple[str, float]] = []

    def timed(name: str, fn: Callable[[Request], Any]) -> list[Any]:
        requests = build_requests(items, spider)  # fresh: no cached fingerprints
        started = time.perf_counter()
        out = [fn(r) for r in requests]
        rows.append((name, (time.perf_counter() - started) * 1e6 / len(requests)))
        return out

    timed("Request(url, callback, priority) construction (bench side, not timed above)",
          lambda r: Request(r.url, callback=spider.parse, priority=r.priority))
    timed("fleet: Scrapy RequestFingerprinter.fingerprint", crawler.request_fingerprinter.fingerprint)
    timed("scrapy-redis: RFPDupeFilter.request_fingerprint (hex)",
          lambda r: RFPDupeFilter.request_fingerprint(None, r))  # type: ignore[arg-type]
    timed("Request.to_dict(spider=...) (both)", lambda r: r.to_dict(spider=spider))
    blobs = timed("fleet: codec.encode (to_dict + checks + msgpack)", lambda r: codec.encode(r, spider))
    pickles = timed("scrapy-redis: to_dict + pickle.dumps",
                    lambda r: pickle.dumps(r.to_dict(spider=spider), protocol=-1))
    started = time.perf_counter()
    for blob in blobs:
        codec.decode(blob, spider)
    rows.append(("fleet: codec.decode (msgpack + checks + request_from_dict)",
                 (time.perf_counter() - started) * 1e6 / len(blobs)))
    from scrapy.utils.request import request_from_dict
    started = time.perf_counter()
    for blob in pickles:
        request_from_dict(pickle.loads(blob), spider=spider)
    rows.append(("scrapy-redis: pickle.loads + request_from_dict",
                 (time.perf_counter() - started) * 1e6 / len(pickles)))
    rows.append(("fleet: mean payload bytes", sum(map(len, blobs)) / len(blobs)))
    rows.append(("scrapy-redis: mean payload bytes", sum(map(len, pickles)) / len(pickles)))
    return rows


# --- servers ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tcp_server(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis-tcp.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit(f"redis-server on port {port} did not start; see {workdir}")
            time.sleep(0.05)


# --- memory per fingerprint -------------------------------------------------------------

def _used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _measure(client: redis.Redis, key: str, fill: Callable[[redis.client.Pipeline], None],
             keys_pattern: str | None = None) -> int:
    """used_memory delta of building a structure (and deleting it afterwards)."""
    _drop(client, keys_pattern or key)
    time.sleep(0.05)
    before = _used_memory(client)
    pipe = client.pipeline(transaction=False)
    fill(pipe)
    pipe.execute()
    after = _used_memory(client)
    _drop(client, keys_pattern or key)
    return after - before


def fingerprint_memory(url: str, count: int) -> list[tuple[str, float, str]]:
    """Bytes per fingerprint of `count` fingerprints in each candidate layout."""
    client = redis.Redis.from_url(url, socket_timeout=60)
    fps = [hashlib.sha1(f"https://example.com/{i}".encode()).digest() for i in range(count)]
    base = f"bench-mem-{uuid.uuid4().hex[:6]}"
    rows: list[tuple[str, float, str]] = []

    def set_of(members: list[Any]) -> Callable[[Any], None]:
        def fill(pipe: Any) -> None:
            for i in range(0, len(members), 1000):
                pipe.sadd(f"{base}:set", *members[i:i + 1000])
        return fill

    def add(name: str, delta: int, note: str) -> None:
        rows.append((name, delta / count, note))

    add("SET of 20-byte raw SHA-1 (scrapy-fleet now)",
        _measure(client, f"{base}:set", set_of(fps)), "exact")
    add("SET of 40-char hex SHA-1 (scrapy-redis)",
        _measure(client, f"{base}:set", set_of([fp.hex() for fp in fps])), "exact")
    add("SET of 16-byte truncated fingerprints",
        _measure(client, f"{base}:set", set_of([fp[:16] for fp in fps])),
        "collision odds ~n^2/2^129: nil")
    add("SET of 8-byte truncated fingerprints",
        _measure(client, f"{base}:set", set_of([fp[:8] for fp in fps])),
        "collision odds ~n^2/2^65 (1e-5 at 1e7 URLs)")

    # intset: 64-bit integers, only while SCARD <= set-max-intset-entries
    ints = [int.from_bytes(fp[:8], "big", signed=True) for fp in fps]
    old = client.config_get("set-max-intset-entries")["set-max-intset-entries"]
    client.config_set("set-max-intset-entries", str(count * 2))
    try:
        started = time.perf_counter()
        delta = _measure(client, f"{base}:set", set_of(ints))
        took = time.perf_counter() - started
    finally:
        client.config_set("set-max-intset-entries", old)
    add("SET of 64-bit ints, intset (set-max-intset-entries raised)", delta,
        f"server-wide config; O(n) insert ({took:.1f} s for {count:,})")

    # bucketed HASHes: compact (ziplist/listpack) encoding while a bucket stays small
    cfg = "hash-max-ziplist-entries"
    if cfg not in client.config_get(cfg):
        cfg = "hash-max-listpack-entries"
    limit = int(client.config_get(cfg)[cfg])
    for per_bucket in (50, 100):
        buckets = 1 << max(1, round(math.log2(count / per_bucket)))
        bits = buckets.bit_length() - 1

        def fill_hash(pipe: Any, buckets: int = buckets, bits: int = bits) -> None:
            for fp in fps:
                head = int.from_bytes(fp[:4], "big")
                pipe.hsetnx(f"{base}:h:{head >> (32 - bits)}", fp[2:16], b"")
        delta = _measure(client, f"{base}:h:*", fill_hash, f"{base}:h:*")
        add(f"HASH buckets x{buckets} (~{count // buckets}/bucket), 14-byte field",
            delta, f"{cfg}={limit}: bucket count must be sized to the crawl")

    # Bloom filter bitmap, 1% false positives, sized for `count`
    m = math.ceil(-count * math.log(0.01) / math.log(2) ** 2)
    k = 7
    bitmap = bytearray((m + 7) // 8)

    def positions(fp: bytes) -> list[int]:
        h1, h2 = int.from_bytes(fp[:8], "big"), int.from_bytes(fp[8:16], "big") | 1
        return [(h1 + j * h2) % m for j in range(k)]

    for fp in fps:
        for p in positions(fp):
            bitmap[p >> 3] |= 1 << (p & 7)
    probes = [hashlib.sha1(f"https://other.example/{i}".encode()).digest() for i in range(count)]
    false_pos = sum(all(bitmap[p >> 3] >> (p & 7) & 1 for p in positions(fp)) for fp in probes)
    delta = _measure(client, f"{base}:bloom", lambda pipe: pipe.set(f"{base}:bloom", bytes(bitmap)))
    add(f"Bloom bitmap, k={k}, {m:,} bits", delta,
        f"{100 * false_pos / count:.2f}% new URLs wrongly dropped; fixed capacity")
    client.close()
    return rows


# --- reporting -------------------------------------------------------------------------

def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 or i == 1 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="distinct requests per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per implementation and transport")
    parser.add_argument("--dup", type=float, default=0.10, help="duplicates, as a fraction of --requests")
    parser.add_argument("--hosts", type=int, default=100, help="distinct hosts (download slots)")
    parser.add_argument("--memory-count", type=int, default=100_000, help="fingerprints for the memory table")
    # the what-if rows are gone (each proposal they estimated is in the frontier now); the
    # option stays so that older command lines still run
    parser.add_argument("--no-what-if", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--transports", default="unix,tcp")
    args = parser.parse_args()

    try:
        import scrapy_redis  # noqa: F401
    except ImportError:
        raise SystemExit("scrapy-redis is needed for the baseline: pip install scrapy-redis")
    from importlib.metadata import version

    logging.basicConfig(level=logging.WARNING)
    # scrapy-redis 0.9.1 passes spider= to StatsCollector.inc_value (deprecated in Scrapy 2.19)
    warnings.filterwarnings("ignore", message=".*'spider' argument.*", module="scrapy_redis")
    warnings.filterwarnings("ignore", message=".*'spider' argument.*")
    install_reactor(REACTOR)
    RoundTrips.install()

    binary = find_redis_server()
    server_version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Python {platform.python_version()}  Scrapy {scrapy.__version__}  redis-py {redis.__version__}  "
          f"scrapy-redis {version('scrapy-redis')}  msgpack {version('msgpack')}")
    print(f"{server_version}  ({binary})")
    print(f"CPUs: {os.cpu_count()}  load average at start: {os.getloadavg()[0]:.2f}  requests/run: {args.requests:,} distinct + "
          f"{int(args.requests * args.dup):,} duplicates over {args.hosts} hosts, runs: {args.runs}")

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    tcp_proc = None
    try:
        urls: dict[str, str] = {}
        transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        if "unix" in transports:
            urls["unix"] = ensure_embedded_server(workdir / "embedded")
        if "tcp" in transports:
            tcp_proc, urls["tcp"] = start_tcp_server(binary, workdir)

        items = workload(args.requests, args.dup, args.hosts)
        results: list[RunResult] = []
        contenders: list[tuple[str, Callable[[str, str, list[Any], int], RunResult]]] = [
            ("scrapy-redis", run_scrapy_redis), ("scrapy-fleet", run_fleet),
            # duplicates dropped in the worker (SeenCache) against all of them sent to Redis
            ("scrapy-fleet, no local seen-cache",
             lambda url, transport, items, n: run_fleet(url, transport, items, n, local_seen=0))]
        names = [name for name, _ in contenders]
        bench_started = time.monotonic()
        for run in range(args.runs):
            for transport, url in urls.items():
                # every contender runs back to back with the baseline, in a rotating order
                shift = run % len(contenders)
                for name, fn in contenders[shift:] + contenders[:shift]:
                    result = fn(url, transport, items, args.requests)
                    result.run = run
                    results.append(result)
                    print(f"  run {run + 1} {transport:4} {name:30} {result.rate:9,.0f} req/s "
                          f"({result.seconds:.2f} s, {result.round_trips:,} round trips)", flush=True)

        print()
        rows = []
        summary: dict[tuple[str, str], float] = {}  # median requests/s
        ratios: dict[tuple[str, str], float] = {}  # median of per-run ratios to scrapy-redis
        for transport in urls:
            base = {r.run: r.rate for r in results
                    if r.impl == "scrapy-redis" and r.transport == transport}
            for impl in names:
                runs = [r for r in results if r.impl == impl and r.transport == transport]
                summary[impl, transport] = rate = statistics.median(r.rate for r in runs)
                ratios[impl, transport] = ratio = statistics.median(r.rate / base[r.run] for r in runs)
                rows.append([
                    impl, transport,
                    f"{rate:,.0f}",
                    f"{min(r.rate for r in runs):,.0f}-{max(r.rate for r in runs):,.0f}",
                    f"{ratio:.2f}x",
                    f"{statistics.median(r.round_trips for r in runs) / args.requests:.3f}",
                    f"{statistics.median(r.server_usec for r in runs) / args.requests:.1f}",
                    f"{statistics.median(r.seen_bytes / r.seen_card for r in runs):.1f}",
                ])

        print(f"Enqueue + dedupe + dequeue (+ ack) of {args.requests:,} requests, "
              f"median of {args.runs} runs (wall {time.monotonic() - bench_started:.0f} s); "
              f"'vs scrapy-redis' is the median of per-run ratios (each run back to back "
              f"with the baseline):")
        print(table(["implementation", "transport", "requests/s", "range", "vs scrapy-redis",
                     "round trips/req", "server CPU us/req", "bytes/fp (MEMORY USAGE)"], rows))

        verdicts = []
        for transport in urls:
            ratio = ratios["scrapy-fleet", transport]
            verdicts.append(f"{transport}: {ratio:.2f}x ({'meets' if ratio >= TARGET_RATIO else 'MISSES'} "
                            f"the {TARGET_RATIO:.0f}x target)")
        print("Speed target: " + "; ".join(verdicts))

        if not args.no_memory:
            url = urls.get("tcp") or next(iter(urls.values()))
            print(f"\nMemory: used_memory delta per fingerprint, {args.memory_count:,} fingerprints "
                  f"(target <= {TARGET_BYTES:.0f} bytes):")
            mem = fingerprint_memory(url, args.memory_count)
            print(table(["layout", "bytes/fp", "", "trade-off"],
                        [[name, f"{b:.1f}", "ok" if b <= TARGET_BYTES else "over", note]
                         for name, b, note in mem]))

        print("\nClient-side cost per request (microseconds; payload sizes in bytes):")
        costs = component_costs(items)
        print(table(["step", "us/req"], [[n, f"{v:.1f}"] for n, v in costs]))
        cost = dict(costs)
        floor = (cost["fleet: Scrapy RequestFingerprinter.fingerprint"]
                 + cost["fleet: codec.encode (to_dict + checks + msgpack)"]
                 + cost["fleet: codec.decode (msgpack + checks + request_from_dict)"])
        for transport in urls:
            base_us = 1e6 / summary["scrapy-redis", transport]
            print(f"Ceiling ({transport}): scrapy-redis takes {base_us:.0f} us/request; fingerprint + "
                  f"encode + decode alone take {floor:.0f} us, so even with a free Redis and no "
                  f"scheduler overhead the ratio is at most {base_us / floor:.1f}x.")

        if not args.no_profile:
            url = urls.get("unix") or next(iter(urls.values()))
            profile = cProfile.Profile()
            result = run_fleet(url, "unix", items, args.requests, profile=profile)
            out = io.StringIO()
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("cumulative").print_stats(15)
            print(f"\nProfile of one scrapy-fleet run ({result.rate:,.0f} req/s under cProfile), "
                  f"top 15 by cumulative time:")
            print("\n".join(l for l in out.getvalue().splitlines() if l.strip())[:6000])
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
            print("\nTop 12 by own time:")
            text = out.getvalue()
            print("\n".join(l for l in text[text.find("ncalls"):].splitlines() if l.strip()))
    finally:
        if tcp_proc is not None:
            tcp_proc.terminate()
            tcp_proc.wait(10)
        stop_embedded_server(workdir / "embedded")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
