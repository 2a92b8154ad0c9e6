"""Feeding benchmark: a RedisSpider's start list into the frontier, against scrapy-redis, same Redis, same run.

    python bench/feed.py                           # 100,000 URLs, batches of 16 and 256, 3 runs, ~3-4 minutes
    python bench/feed.py --runs 5                  # steadier medians on a busy machine
    python bench/feed.py --entries 5000 --runs 1 --no-profile   # smoke test, ~10 s

Every run starts from the same list: ``--entries`` URLs (``http://host{i % 1000}.example/{i}``,
all distinct, over ``--hosts`` hosts; nothing is fetched) RPUSHed into the spider's
``redis_key`` before the clock starts. What is timed, until the list is empty:

- scrapy-fleet: a real ``FleetScheduler`` opened on a ``scrapy_fleet.spiders.RedisSpider``
  subclass, driven as the scheduler drives it, minus the reactor: ``scheduler._feed_batch()``
  (the TAKE script: acknowledge the batches stored so far, move the next batch from the key
  into the leased ``feeding`` hash; then ``make_request_from_data`` and ``enqueue_request``
  of every entry, buffered for one flush), then ``scheduler._flush()`` (the FLUSH
  script: dedupe + store the batch's requests, which marks the batch stored). The loop ends
  with the TAKE that finds the key empty and carries the last acknowledgement. So every
  entry ends as a stored, deduplicated request in the frontier, and its batch is
  acknowledged. Afterwards the bench checks that the frontier's ``pending`` gauge and its
  seen-set both hold exactly ``--entries``, that the ``feeding`` hash and the start list
  are gone, and the worker's own ``fleet/feed/*`` stats; a mismatch stops the bench.
- scrapy-redis ``next_requests``: ``RedisSpider.next_requests()`` in its default list
  mode (one LRANGE + LTRIM pipeline per batch, then ``make_request_from_data`` per entry),
  the generator consumed, until a call yields nothing. Taking + making requests only; the
  requests are thrown away. No acknowledgement: an entry taken by a worker that dies is lost.
- scrapy-redis ``next_requests + enqueue_request``: the same, each request then handed to
  its ``Scheduler.enqueue_request`` (defaults: PriorityQueue + pickle, one ZADD round trip
  per request), which is where its crawl puts them. Its start requests are
  ``dont_filter=True`` (scrapy-redis makes them so), so its dupefilter is never asked:
  this row does less work than the fleet's, which fingerprints and dedupes every entry.
  Checked afterwards: ZCARD of its queue = ``--entries``.

In a crawl both go through ``engine.crawl(request)`` (the ``request_scheduled`` signal,
then ``enqueue_request``); with no engine here, both call ``enqueue_request`` directly (the
fleet's feeder is pointed at the scheduler's ``enqueue_request`` instead of
``scheduler.feed``, which is ``engine.crawl``).

Batch sizes (``--batches``, default 16 and 256): the fleet's 16 is its default (no
``REDIS_START_URLS_BATCH_SIZE``, so CONCURRENT_REQUESTS = 16); other sizes set
``REDIS_START_URLS_BATCH_SIZE``. scrapy-redis 0.9.1 reads only CONCURRENT_REQUESTS (its
docs call REDIS_START_URLS_BATCH_SIZE deprecated), so it gets ``redis_batch_size`` on the
spider class, which both honour.

scrapy-redis logs a WARNING per plain-URL entry ("String request is deprecated, please use
JSON"); the bench raises its spider logger to ERROR so that the row does not time 100,000
lines of stderr (the f-string is still built). ``--json`` pushes scrapy-redis's JSON
objects instead: ``{"url": ..., "meta": {"n": i}}``.

All contenders run on the same redis-server binary (``find_redis_server()``): by default the
embedded server on a unix socket (``ensure_embedded_server``: AOF on, as users get it);
``--transports unix,tcp`` adds a second server on TCP loopback (no persistence). Within a
run and batch size the three contenders run back to back in a rotating order; entries/s
is the median over runs and "vs" columns are medians of the per-run ratios to the
scrapy-redis rows of the same run and batch size.

Round trips are counted by wrapping redis-py's ``send_packed_command`` (a command or a
whole pipeline, written then answered), divided by ``--entries``. Redis CPU is the
server's INFO cpu (user + sys) delta over the timed part, per entry.

scrapy-redis is a bench-only dependency: ``pip install -e .[bench]`` or
``pip install scrapy-redis``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import shutil
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import scrapy  # noqa: E402
from scrapy.crawler import Crawler  # noqa: E402
from scrapy.utils.reactor import install_reactor  # noqa: E402

from frontier import (  # noqa: E402  (bench/frontier.py: same conventions, same helpers)
    REACTOR,
    RoundTrips,
    _drop,
    _server_cpu,
    start_tcp_server,
    table,
)
from scrapy_fleet.config import FleetConfig  # noqa: E402
from scrapy_fleet.frontier.dupefilter import FleetDupeFilter  # noqa: E402
from scrapy_fleet.frontier.keys import CrawlKeys  # noqa: E402
from scrapy_fleet.frontier.scheduler import FleetScheduler  # noqa: E402
from scrapy_fleet.redis_server import (  # noqa: E402
    ensure_embedded_server,
    find_redis_server,
    stop_embedded_server,
)
from scrapy_fleet.spiders import RedisSpider as FleetRedisSpider  # noqa: E402

SPIDER = "benchfeed"
DEFAULT_BATCH = 16  # CONCURRENT_REQUESTS' default: both libraries' default batch size

SR_TAKE = "scrapy-redis next_requests"
SR_ENQUEUE = "scrapy-redis next_requests + enqueue_request"
FLEET = "scrapy-fleet feed + flush"


class FleetFeedSpider(FleetRedisSpider):
    name = SPIDER

    def parse(self, response: Any) -> None:
        pass


def _scrapy_redis_spider(batch: int) -> type:
    from scrapy_redis.spiders import RedisSpider

    attrs: dict[str, Any] = {"name": SPIDER, "parse": lambda self, response: None}
    if batch != DEFAULT_BATCH:
        attrs["redis_batch_size"] = batch  # 0.9.1 ignores REDIS_START_URLS_BATCH_SIZE
    return type("ScrapyRedisFeedSpider", (RedisSpider,), attrs)


# --- the workload ------------------------------------------------------------------

def entries_of(n: int, hosts: int, as_json: bool) -> list[bytes]:
    urls = [f"http://host{i % hosts}.example/{i}" for i in range(n)]
    if as_json:
        return [json.dumps({"url": u, "meta": {"n": i}}).encode() for i, u in enumerate(urls)]
    return [u.encode() for u in urls]


def fill(client: redis.Redis, key: str, entries: list[bytes]) -> None:
    """The producer's side (not timed): RPUSH, so the list's head is entry 0."""
    client.delete(key)
    pipe = client.pipeline(transaction=False)
    for i in range(0, len(entries), 1000):
        pipe.rpush(key, *entries[i:i + 1000])
    pipe.execute()
    if client.llen(key) != len(entries):
        raise SystemExit(f"could not fill {key!r}: LLEN {client.llen(key)} != {len(entries)}")


@dataclass
class RunResult:
    impl: str
    transport: str
    batch: int
    seconds: float
    entries: int
    round_trips: int
    server_usec: int
    run: int = 0

    @property
    def rate(self) -> float:
        return self.entries / self.seconds


def _crawler(spidercls: type, settings: dict[str, Any]) -> Crawler:
    crawler = Crawler(spidercls, {"LOG_LEVEL": "WARNING", "TELNETCONSOLE_ENABLED": False, **settings})
    crawler._apply_settings()
    crawler.spider = crawler._create_spider()
    return crawler


def _timed(admin: redis.Redis, work: Callable[[], int],
           profile: cProfile.Profile | None = None) -> tuple[float, int, int, int]:
    """(seconds, what work returned, round trips, redis-server CPU us) of ``work``."""
    cpu_before = _server_cpu(admin)
    RoundTrips.count, RoundTrips.enabled = 0, True
    if profile is not None:
        profile.enable()
    started = time.perf_counter()
    try:
        done = work()
    finally:
        seconds = time.perf_counter() - started
        if profile is not None:
            profile.disable()
        RoundTrips.enabled = False
    return seconds, done, RoundTrips.count, int((_server_cpu(admin) - cpu_before) * 1e6)


# --- scrapy-fleet ----------------------------------------------------------------------

def run_fleet(url: str, admin: redis.Redis, transport: str, entries: list[bytes], batch: int,
              profile: cProfile.Profile | None = None) -> RunResult:
    prefix = f"bench-feed-{uuid.uuid4().hex[:8]}"
    start_key = f"{prefix}:start_urls"
    settings: dict[str, Any] = {"REDIS_URL": url, "FLEET_KEY_PREFIX": prefix,
                                "REDIS_START_URLS_KEY": start_key}
    if batch != DEFAULT_BATCH:
        settings["REDIS_START_URLS_BATCH_SIZE"] = batch
    crawler = _crawler(FleetFeedSpider, settings)
    spider = crawler.spider
    scheduler = FleetScheduler(
        config=FleetConfig.from_settings(crawler.settings),
        dupefilter=FleetDupeFilter(fingerprinter=crawler.request_fingerprinter),
        stats=crawler.stats,
        crawler=None,
        concurrent_requests=crawler.settings.getint("CONCURRENT_REQUESTS"),
    )
    fill(admin, start_key, entries)
    scheduler.open(spider)
    if scheduler._tick is not None and scheduler._tick.running:
        scheduler._tick.stop()  # no reactor runs here; everything is called directly
    feeder = scheduler.feeder
    if feeder is None or feeder.batch_size != batch:
        raise SystemExit(f"scrapy-fleet: no start-key feeder of batch {batch} ({feeder!r})")
    feeder.enqueue = scheduler.enqueue_request  # engine.crawl(request) without an engine
    keys = CrawlKeys(prefix, SPIDER)
    feeding_key = keys.feeding(start_key)

    def work() -> int:
        taken = 0
        while True:
            got = scheduler._feed_batch()  # acks the stored batches, takes and enqueues the next
            scheduler._flush()  # stores what is still buffered: the batch is now stored
            if not got:
                return taken
            taken += got

    seconds, taken, trips, usec = _timed(admin, work, profile)

    # correctness: every entry is one stored request, every batch acknowledged
    n = len(entries)
    redis_stats = {k.decode(): v.decode() for k, v in admin.hgetall(keys.stats).items()}
    checks = {
        "entries taken": taken,
        "frontier pending": int(redis_stats.get("pending", -1)),
        "seen-set count": int(admin.hget(keys.seen.meta, "n") or 0),
        "payload HLEN": admin.hlen(keys.payload),
        "fleet/feed/entries": crawler.stats.get_value("fleet/feed/entries", 0),
        "fleet/feed/requests": crawler.stats.get_value("fleet/feed/requests", 0),
        "fleet/enqueued": crawler.stats.get_value("fleet/enqueued", 0),
    }
    problems = [f"{name} = {value}, not {n}" for name, value in checks.items() if value != n]
    problems += [f"{what} = {value}" for what, value in {
        "feeding HLEN (batches never acknowledged)": admin.hlen(feeding_key),
        "start list LLEN": admin.llen(start_key),
        "fleet/feed/bad": crawler.stats.get_value("fleet/feed/bad", 0),
        "fleet/duplicate": crawler.stats.get_value("fleet/duplicate", 0),
        "buffered pushes": len(scheduler._pushes),
        "batches not stored": len(feeder._unflushed),
        "batches not acknowledged": sum(map(len, feeder._to_ack.values())),
    }.items() if value]
    if problems:
        raise SystemExit(f"scrapy-fleet feed run wrong (batch {batch}, {transport}): "
                         + "; ".join(problems))
    scheduler.close("finished")
    _drop(admin, keys.pattern)
    admin.delete(start_key, feeding_key)
    return RunResult(FLEET, transport, batch, seconds, taken, trips, usec)


# --- scrapy-redis -----------------------------------------------------------------------

def _sr_crawler(url: str, prefix: str, start_key: str, batch: int) -> Crawler:
    crawler = _crawler(_scrapy_redis_spider(batch), {
        "REDIS_URL": url,
        "REDIS_START_URLS_KEY": start_key,
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",  # as its README says
        "SCHEDULER_QUEUE_KEY": f"{prefix}:%(spider)s:requests",
        "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:%(spider)s:dupefilter",
        "SCHEDULER_PERSIST": True,  # we check its queue after the run, then drop it
    })
    spider = crawler.spider
    if spider.redis_batch_size != batch or spider.redis_key != start_key:
        raise SystemExit(f"scrapy-redis spider set up with batch {spider.redis_batch_size} "
                         f"on {spider.redis_key!r}")
    # one WARNING per plain-URL entry ("String request is deprecated"): not stderr's speed
    logging.getLogger(spider.name).setLevel(logging.ERROR)
    return crawler


def _drain(spider: Any, each: Callable[[Any], Any] | None) -> int:
    made = 0
    while True:
        got = 0
        for request in spider.next_requests():
            got += 1
            if each is not None:
                each(request)
        if not got:
            return made
        made += got


def run_sr_take(url: str, admin: redis.Redis, transport: str, entries: list[bytes],
                batch: int) -> RunResult:
    prefix = f"bench-sr-{uuid.uuid4().hex[:8]}"
    start_key = f"{prefix}:start_urls"
    spider = _sr_crawler(url, prefix, start_key, batch).spider
    fill(admin, start_key, entries)
    seconds, made, trips, usec = _timed(admin, lambda: _drain(spider, None))
    if made != len(entries) or admin.llen(start_key):
        raise SystemExit(f"scrapy-redis next_requests run wrong: {made} requests of "
                         f"{len(entries)}, {admin.llen(start_key)} left in the list")
    spider.server.close()
    return RunResult(SR_TAKE, transport, batch, seconds, made, trips, usec)


def run_sr_enqueue(url: str, admin: redis.Redis, transport: str, entries: list[bytes],
                   batch: int) -> RunResult:
    from scrapy_redis.scheduler import Scheduler

    prefix = f"bench-sr-{uuid.uuid4().hex[:8]}"
    start_key = f"{prefix}:start_urls"
    crawler = _sr_crawler(url, prefix, start_key, batch)
    spider = crawler.spider
    scheduler = Scheduler.from_crawler(crawler)
    scheduler.open(spider)
    fill(admin, start_key, entries)
    seconds, made, trips, usec = _timed(admin, lambda: _drain(spider, scheduler.enqueue_request))
    queued = admin.zcard(scheduler.queue.key)
    if made != len(entries) or queued != len(entries) or admin.llen(start_key):
        raise SystemExit(f"scrapy-redis next_requests + enqueue_request run wrong: {made} "
                         f"requests, {queued} queued, of {len(entries)}; "
                         f"{admin.llen(start_key)} left in the list")
    scheduler.close("finished")
    _drop(admin, f"{prefix}:*")
    scheduler.server.close()
    spider.server.close()
    return RunResult(SR_ENQUEUE, transport, batch, seconds, made, trips, usec)


# --- per-entry client-side costs ---------------------------------------------------------

def component_costs(entries: list[bytes]) -> list[tuple[str, float]]:
    """Microseconds per entry of the pure-Python steps of each feed path (no Redis)."""
    import pickle

    from scrapy_fleet.frontier import codec
    from scrapy_fleet.frontier.scheduler import slot_of

    crawler = _crawler(FleetFeedSpider, {"REDIS_URL": "redis://127.0.0.1:1/0"})
    spider = crawler.spider
    sr_spider = _sr_crawler("redis://127.0.0.1:1/0", "bench-costs", "bench-costs:start",
                            DEFAULT_BATCH).spider
    config = FleetConfig.from_settings(crawler.settings)
    rows: list[tuple[str, float]] = []

    def timed(name: str, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        started = time.perf_counter()
        out = [fn(x) for x in items]
        rows.append((name, (time.perf_counter() - started) * 1e6 / len(items)))
        return out

    requests = timed("fleet: make_request_from_data (decode, strip, Request)",
                     spider.make_request_from_data, entries)
    timed("scrapy-redis: make_request_from_data (FormRequest, dont_filter)",
          sr_spider.make_request_from_data, entries)
    timed("fleet: Scrapy RequestFingerprinter.fingerprint",
          crawler.request_fingerprinter.fingerprint, requests)
    timed("fleet: codec.encode (to_dict + checks + msgpack)",
          lambda r: codec.encode(r, spider, config), requests)
    timed("fleet: slot_of (urlparse_cached hostname)", slot_of, requests)
    timed("scrapy-redis: to_dict + pickle.dumps",
          lambda r: pickle.dumps(r.to_dict(spider=sr_spider), protocol=-1), requests)
    sr_spider.server.close()
    return rows


# --- main ------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000, help="URLs in the start list")
    parser.add_argument("--hosts", type=int, default=1000, help="distinct hosts (download slots)")
    parser.add_argument("--runs", type=int, default=3, help="runs of every row")
    parser.add_argument("--batches", default="16,256",
                        help="batch sizes (redis_batch_size), comma-separated")
    parser.add_argument("--json", action="store_true",
                        help='push {"url": ..., "meta": {...}} objects instead of plain URLs')
    parser.add_argument("--transports", default="unix", help="unix, tcp or unix,tcp")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--profile-entries", type=int, default=10_000,
                        help="entries of the profiled scrapy-fleet run (first batch size)")
    parser.add_argument("--no-costs", action="store_true")
    args = parser.parse_args()

    try:
        import scrapy_redis  # noqa: F401
    except ImportError:
        raise SystemExit("scrapy-redis is needed for the baseline: pip install scrapy-redis")
    from importlib.metadata import version

    logging.basicConfig(level=logging.WARNING)
    # scrapy-redis 0.9.1 passes spider= to StatsCollector.inc_value (deprecated in Scrapy 2.19)
    warnings.filterwarnings("ignore", message=".*'spider' argument.*")
    install_reactor(REACTOR)
    RoundTrips.install()

    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    n = args.entries
    binary = find_redis_server()
    server_version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"Python {platform.python_version()}  Scrapy {scrapy.__version__}  redis-py {redis.__version__}  "
          f"scrapy-redis {version('scrapy-redis')}  msgpack {version('msgpack')}")
    print(f"{server_version}  ({binary})")
    print(f"CPUs: {os.cpu_count()}  load average at start: {os.getloadavg()[0]:.2f}  "
          f"start list: {n:,} distinct {'JSON objects' if args.json else 'URLs'} over "
          f"{args.hosts} hosts, batches: {', '.join(map(str, batches))}, runs: {args.runs}")

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-feed-"))
    tcp_proc = None
    try:
        urls: dict[str, str] = {}
        transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        if "unix" in transports:
            urls["unix"] = ensure_embedded_server(workdir / "embedded")
        if "tcp" in transports:
            tcp_proc, urls["tcp"] = start_tcp_server(binary, workdir)
        admins = {t: redis.Redis.from_url(u, socket_timeout=60) for t, u in urls.items()}

        entries = entries_of(n, args.hosts, args.json)
        contenders: list[tuple[str, Callable[..., RunResult]]] = [
            (SR_TAKE, run_sr_take), (SR_ENQUEUE, run_sr_enqueue), (FLEET, run_fleet)]
        names = [name for name, _ in contenders]
        results: list[RunResult] = []
        bench_started = time.monotonic()
        for run in range(args.runs):
            for transport, url in urls.items():
                for batch in batches:
                    shift = run % len(contenders)
                    for name, fn in contenders[shift:] + contenders[:shift]:
                        result = fn(url, admins[transport], transport, entries, batch)
                        result.run = run
                        results.append(result)
                        print(f"  run {run + 1} {transport:4} batch {batch:4} {name:45} "
                              f"{result.rate:9,.0f} entries/s ({result.seconds:.2f} s, "
                              f"{result.round_trips:,} round trips)", flush=True)

        print()
        rows = []
        for transport in urls:
            for batch in batches:
                base = {impl: {r.run: r.rate for r in results if r.impl == impl
                               and r.transport == transport and r.batch == batch}
                        for impl in (SR_TAKE, SR_ENQUEUE)}
                for impl in names:
                    runs = [r for r in results
                            if r.impl == impl and r.transport == transport and r.batch == batch]
                    rates = [r.rate for r in runs]
                    rows.append([
                        impl, transport, str(batch),
                        f"{statistics.median(rates):,.0f}",
                        f"{min(rates):,.0f}-{max(rates):,.0f}",
                        f"{statistics.median(r.rate / base[SR_TAKE][r.run] for r in runs):.2f}x",
                        f"{statistics.median(r.rate / base[SR_ENQUEUE][r.run] for r in runs):.2f}x",
                        f"{statistics.median(r.round_trips for r in runs) / n:.4f}",
                        f"{statistics.median(r.server_usec for r in runs) / n:.1f}",
                    ])
        print(f"Feeding {n:,} start entries from a Redis list, median of {args.runs} runs "
              f"(wall {time.monotonic() - bench_started:.0f} s); 'vs' columns are medians of "
              f"per-run ratios to the scrapy-redis rows of the same run and batch size:")
        print(table(["implementation", "transport", "batch", "entries/s", "range",
                     "vs sr take", "vs sr take+enqueue", "round trips/entry",
                     "server CPU us/entry"], rows))

        if not args.no_costs:
            sample = entries[:min(n, 20_000)]
            print(f"\nClient-side cost per entry ({len(sample):,} entries, microseconds, no Redis):")
            print(table(["step", "us/entry"], [[s, f"{v:.1f}"] for s, v in component_costs(sample)]))

        if not args.no_profile:
            transport, url = next(iter(urls.items()))
            batch = batches[0]
            sample = entries[:min(n, args.profile_entries)]
            profile = cProfile.Profile()
            result = run_fleet(url, admins[transport], transport, sample, batch, profile=profile)
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(18)
            print(f"\nProfile of one scrapy-fleet run ({len(sample):,} entries, batch {batch}, "
                  f"{transport}; {result.rate:,.0f} entries/s under cProfile), top 18 by "
                  f"cumulative time:")
            text = out.getvalue()
            print("\n".join(l for l in text[text.find("ncalls"):].splitlines() if l.strip()))
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(12)
            print("\nTop 12 by own time:")
            text = out.getvalue()
            print("\n".join(l for l in text[text.find("ncalls"):].splitlines() if l.strip()))
        for admin in admins.values():
            admin.close()
    finally:
        if tcp_proc is not None:
            tcp_proc.terminate()
            tcp_proc.wait(10)
        stop_embedded_server(workdir / "embedded")
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
