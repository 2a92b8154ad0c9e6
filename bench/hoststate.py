"""Per-host state in Redis: bytes per crawled host, before and after issue 8's bounds.

    python bench/hoststate.py                          # 5,000 hosts, synthetic robots.txt mix
    python bench/hoststate.py --hosts 500              # smoke test, a few seconds
    python bench/hoststate.py --robots-dir DIR         # real robots.txt files, one per host

Each host is crawled the way a crawl leaves it: one page pushed, leased and acknowledged
with DOWNLOAD_DELAY (``nextok``), its robots.txt stored, its Crawl-delay applied when it has
one (``slotdelay``, ``crawldelay``; above 1 s the host counts as skipped, so that the bench
need not wait it out), and 1 host in 50 answered a 429 (``backoff``). Three
layouts, each under its own key prefix on one embedded redis-server:

- before: what the fleet stored until now: the whole robots.txt body (up to 512 KiB) and
  every host's fields for ever;
- after, live: the robots.txt groups for the crawl's user agent (``compact_robots``),
  capped at FLEET_ROBOTS_MAX_BYTES, with the new entry header: a host still being crawled;
- after, finished: the same hosts once finished for FLEET_HOST_STATE_TTL and walked by
  the pruner (``HostStatePruner.walk``).

Bytes are ``MEMORY USAGE <hash> SAMPLES 0`` (exact) of the five per-host hashes, divided by
the number of hosts. ``--robots-dir`` takes any folder of robots.txt files (one file per
host; for instance the test data of the Protego project); without it, a synthetic mix of
typical shapes is used.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrapy_fleet.frontier.keys import CrawlKeys  # noqa: E402
from scrapy_fleet.frontier.queue import RedisFrontier  # noqa: E402
from scrapy_fleet.politeness.config import PolitenessConfig  # noqa: E402
from scrapy_fleet.politeness.prune import HostStatePruner  # noqa: E402
from scrapy_fleet.politeness.robotstxt import MAX_READ_BYTES, compact_robots  # noqa: E402
from scrapy_fleet.politeness.store import PolitenessStore  # noqa: E402
from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server  # noqa: E402

AGENT = "Scrapy/2.19 (+https://scrapy.org)"  # Scrapy's default USER_AGENT
MAX_BYTES = PolitenessConfig.robots_max_bytes
TTL = 0.3  # FLEET_HOST_STATE_TTL of the "finished" layout, seconds
DELAY = 0.1  # DOWNLOAD_DELAY, seconds
# Crawl-delays above this count as above FLEET_MAX_CRAWL_DELAY (the host is skipped), so
# that the bench need not wait out a real file's "Crawl-delay: 3600" before the walk
MAX_CRAWL_DELAY = 1.0

_BOTS = ["GPTBot", "CCBot", "Google-Extended", "anthropic-ai", "ClaudeBot", "Bytespider",
         "PerplexityBot", "Amazonbot", "omgilibot", "FacebookBot", "AhrefsBot", "SemrushBot",
         "MJ12bot", "DotBot", "BLEXBot", "PetalBot", "YandexBot", "Baiduspider"]


def synthetic(rng: random.Random) -> bytes | None:
    """One robots.txt of a typical shape (None: 404, no robots.txt)."""
    shape = rng.random()
    if shape < 0.10:
        return None
    if shape < 0.45:
        return b"User-agent: *\nDisallow:\n"
    if shape < 0.75:  # a WordPress default and a sitemap
        return (b"# WordPress\nUser-agent: *\nDisallow: /wp-admin/\nAllow: /wp-admin/admin-ajax.php\n\n"
                b"Sitemap: https://example.com/wp-sitemap.xml\n")
    if shape < 0.95:  # a news site: groups for a dozen bots, then its own rules
        bots = rng.sample(_BOTS, 12)
        own = b"".join(b"Disallow: /%s/\n" % w.encode() for w in rng.sample(
            ["search", "account", "cart", "tag", "print", "amp", "api", "preview", "login"], 6))
        return (b"".join(b"User-agent: %s\nDisallow: /\n\n" % b.encode() for b in bots)
                + b"User-agent: *\nCrawl-delay: 1\n" + own
                + b"\nSitemap: https://example.com/news-sitemap.xml\n")
    # a large site: long per-bot rule lists (about 60 KB)
    return b"".join(b"User-agent: %s\n" % b.encode() + b"".join(
        b"Disallow: /%s/section-%d/\n" % (b.lower().encode(), i) for i in range(120)) + b"\n"
        for b in _BOTS) + b"User-agent: *\nDisallow: /private/\n"


def robots_bodies(n: int, folder: Path | None) -> list[bytes | None]:
    if folder is None:
        rng = random.Random(8)
        return [synthetic(rng) for _ in range(n)]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"no files in {folder}")
    return [files[i % len(files)].read_bytes() for i in range(n)]


def crawl(client, prefix: str, bodies: list[bytes | None], compact: bool) -> PolitenessStore:
    keys = CrawlKeys(prefix, "bench")
    frontier = RedisFrontier(client, keys, "w1", url="bench", download_delay=DELAY)
    frontier.open(fresh=True)
    store = PolitenessStore(frontier)
    hosts = [f"site{i}.example.com" for i in range(len(bodies))]
    frontier.flush([(i.to_bytes(20, "big"), h, 0, b"page") for i, h in enumerate(hosts)])
    leased = []
    while popped := frontier.flush(pop=1000).popped:
        leased += [i for i, _ in popped]
    frontier.flush(acks=leased)
    for i, (host, body) in enumerate(zip(hosts, bodies)):
        if body is None:
            rules, truncated = None, False
        elif compact:
            kept = compact_robots(body, [AGENT], MAX_BYTES)
            rules, truncated = kept.body, kept.truncated
        else:
            rules, truncated = body[:MAX_READ_BYTES], False
        delay = _crawl_delay(rules)
        skipped = delay is not None and delay > MAX_CRAWL_DELAY
        if compact:
            store.robots_put(host, host, rules, crawl_delay=delay, skipped=skipped, truncated=truncated)
        else:  # the previous layout: "<status>\n<body>", Crawl-delay in a script of its own
            client.hset(keys.robots, host, b"-\n" if rules is None else b"200\n" + rules)
            if delay is not None:
                store.set_crawl_delay(host, None if skipped else delay)
        if i % 50 == 7:
            store.backoff(host, None, base=0.01, cap=0.05)
    return store


def _crawl_delay(rules: bytes | None) -> float | None:
    if rules is None:
        return None
    from protego import Protego

    delay = Protego.parse(rules.decode("utf-8", "ignore")).crawl_delay(AGENT)
    return None if delay is None else float(delay)


def measure(client, store: PolitenessStore) -> dict[str, int]:
    k = store.keys
    names = {"nextok": k.nextok, "slotdelay": k.slot_delay, "crawldelay": k.crawl_delay,
             "backoff": k.backoff, "robots": k.robots}
    return {name: int(client.memory_usage(key, samples=0) or 0) for name, key in names.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--robots-dir", type=Path, default=None,
                        help="a folder of robots.txt files, one per host (cycled)")
    args = parser.parse_args()

    bodies = robots_bodies(args.hosts, args.robots_dir)
    sizes = sorted(len(b) for b in bodies if b is not None)
    kept = sorted(len(compact_robots(b, [AGENT], MAX_BYTES).body) for b in bodies if b is not None)
    source = f"files in {args.robots_dir}" if args.robots_dir else "synthetic mix"
    print(f"{args.hosts:,} hosts; robots.txt: {source}; {len(sizes):,} with a body, "
          f"median {sizes[len(sizes) // 2]:,} B (kept {kept[len(kept) // 2]:,} B), "
          f"p99 {sizes[int(len(sizes) * 0.99)]:,} B (kept {kept[int(len(kept) * 0.99)]:,} B), "
          f"max {sizes[-1]:,} B (kept {kept[-1]:,} B)")

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    try:
        client = connect(ensure_embedded_server(work / "redis"))
        rows = []
        before = crawl(client, "before", bodies, compact=False)
        rows.append(("before (whole body, kept for ever)", measure(client, before)))
        after = crawl(client, "after", bodies, compact=True)
        rows.append(("after, host live (compact robots.txt)", measure(client, after)))
        time.sleep(TTL + MAX_CRAWL_DELAY + DELAY + 0.2)  # every host's last turn is over
        # the server's own time per PRUNE call: the slow log records every command
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 100_000)
        client.slowlog_reset()
        started = time.perf_counter()
        slots, robots = HostStatePruner(after, PolitenessConfig(host_state_ttl=TTL, backoff_max=0.05),
                                        []).walk()
        walk_s = time.perf_counter() - started
        calls = [e["duration"] for e in client.slowlog_get(100_000)
                 if e["command"].split(b" ", 1)[0].lower() == b"evalsha"]
        rows.append(("after, host finished (pruned)", measure(client, after)))

        names = ["nextok", "slotdelay", "crawldelay", "backoff", "robots"]
        print(f"\nRedis memory per crawled host (MEMORY USAGE SAMPLES 0 of each hash / {args.hosts:,}):")
        print("| layout | " + " | ".join(names) + " | total B/host | 1M hosts |")
        print("|---|" + "---:|" * (len(names) + 2))
        for label, usage in rows:
            total = sum(usage.values()) / args.hosts
            cells = [f"{usage[n] / args.hosts:,.1f}" for n in names]
            print(f"| {label} | " + " | ".join(cells) + f" | {total:,.1f} | {total * 1e6 / 2**30:,.2f} GiB |")
        print(f"\nThe walk pruned {slots:,} slots and {robots:,} robots.txt entries in {walk_s:.2f} s: "
              f"{len(calls)} PRUNE calls (one HSCAN slice each), server time per call "
              f"mean {sum(calls) / max(1, len(calls)) / 1000:.2f} ms, max {max(calls, default=0) / 1000:.2f} ms.")
    finally:
        stop_embedded_server(work / "redis")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
