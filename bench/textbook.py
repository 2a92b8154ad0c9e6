"""The textbook's crawler table, rebuilt on a simulated web, next to Scrapy and ``scrapy fleet``.

The book ("Web Scraping with Python", chapter "Concurrent downloading") crawled the home
pages of the Alexa top 500 sites: serial 1349.8 s; best, 4 processes x 5 threads sharing
a Redis list queue (``mp_threaded_crawler``), 156.4 s. This script re-implements its
three crawlers from that description (requests through a ``Downloader`` with retries on
5xx, robots.txt per domain, a shared list queue and a ``seen`` set; threads started by a
manager loop that wakes every second) and runs them, plain one-process Scrapy
(``scrapy crawl alexa`` without the fleet add-on, its in-memory scheduler), and
``scrapy fleet alexa -n 1, 2, 4``, all against one simulated web (bench/simweb.py: real
host names from the Tranco head behind one local forward proxy, ~150 ms per request, some
slow, some failing; past the list's 2,000 rows, made-up names ``simN.example``).

    python bench/textbook.py [--sites 500] [--serial-sites 100] [--runs 1]
    python bench/textbook.py --sites 5000 --serial-sites 100 --threaded-sites 500 --mp-runs 1

The spiders run with their own defaults (alexa's broad-crawl settings); every crawler gets
the same 3 s timeout and 1 retry, so that the lower bounds below hold for all of them.
The serial and threaded crawlers are slow: they crawl the first --serial-sites /
--threaded-sites sites and their time is scaled to all of them by those sites' share of
the latency (printed as such). Never part of the test run.

Lower bounds, per row: a polite crawler needs at least the slowest site's chain
(robots.txt, then its page with every retry a failing page gets), and at least the sum of
all chains divided by how many requests it has in flight (its concurrency: 1 for serial,
5, 20, 200 per Scrapy process). "/ bound" is the row's time over the larger of the two.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.robotparser
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fleet_examples.toplist import TopSite, iter_rows, open_list_lines  # noqa: E402
from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server  # noqa: E402
from simweb import chain_seconds, profile  # noqa: E402

BOOK_SERIAL = 1349.8
BOOK_BEST = 156.4  # 4 processes x 5 threads
LIST = REPO / "tests" / "fixtures" / "toplists" / "tranco_top-1m_head2000_kmikholap-dns-gen.csv"
TIMEOUT = 3.0  # every crawler's download timeout (a hanging site costs this per attempt)
RETRIES = 1  # every crawler retries a failed page once
SLEEP_TIME = 1  # the book's manager loop: seconds between looks at its threads
USER_AGENT = "wswp"
SEED = 1


# --- the book's crawlers --------------------------------------------------------------

class Downloader:
    """The book's Downloader: requests.get through a proxy, 5xx retried num_retries times."""

    def __init__(self, proxy: str, num_retries: int = RETRIES, timeout: float = TIMEOUT) -> None:
        self.proxies = {"http": proxy}
        self.num_retries = num_retries
        self.timeout = timeout

    def download(self, url: str, num_retries: int | None = None) -> tuple[int | None, str | None]:
        retries = self.num_retries if num_retries is None else num_retries
        try:
            resp = requests.get(url, headers={"User-Agent": USER_AGENT}, proxies=self.proxies,
                                timeout=self.timeout)
            html, code = resp.text, resp.status_code
            if code >= 400:
                html = None
                if retries and 500 <= code < 600:
                    return self.download(url, retries - 1)
        except requests.exceptions.RequestException:
            html, code = None, None
            if retries:  # as Scrapy does: timeouts and resets are retried too
                return self.download(url, retries - 1)
        return code, html


class RobotsCache:
    """robots.txt parsed once per domain (the book's get_robots_parser, cached)."""

    def __init__(self, downloader: Downloader) -> None:
        self.D = downloader
        self.parsers: dict[str, urllib.robotparser.RobotFileParser] = {}
        self.lock = threading.Lock()

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        with self.lock:
            rp = self.parsers.get(parts.netloc)
        if rp is None:
            rp = urllib.robotparser.RobotFileParser()
            code, text = self.D.download(f"{parts.scheme}://{parts.netloc}/robots.txt", 0)
            rp.parse((text or "").splitlines()) if code == 200 else rp.parse([])
            with self.lock:
                self.parsers[parts.netloc] = rp
        return rp.can_fetch(USER_AGENT, url)


def crawl_one(url: str, D: Downloader, robots: RobotsCache) -> bool:
    if not robots.allowed(url):
        return False
    code, html = D.download(url)
    return html is not None


def serial_crawler(urls: list[str], proxy: str) -> None:
    D = Downloader(proxy)
    robots = RobotsCache(D)
    for url in urls:
        crawl_one(url, D, robots)


class ListQueue:
    """The threaded crawler's queue: a plain list shared by the threads, plus ``seen``."""

    def __init__(self, urls: list[str]) -> None:
        self.items = list(reversed(urls))
        self.seen = set(urls)

    def pop(self) -> str:
        try:
            return self.items.pop()
        except IndexError:
            raise KeyError("pop from an empty queue") from None

    def __len__(self) -> int:
        return len(self.items)


class RedisQueue:
    """The book's RedisQueue: a Redis list of URLs and a Redis set of seen ones."""

    def __init__(self, client, name: str) -> None:
        self.db = client
        self.name = name

    def push(self, urls: list[str]) -> None:
        new = [u for u in urls if self.db.sadd(f"{self.name}:seen", u)]
        if new:
            self.db.rpush(self.name, *new)

    def pop(self) -> str:
        url = self.db.lpop(self.name)
        if url is None:
            raise KeyError("pop from an empty queue")
        return url.decode()

    def __len__(self) -> int:
        return self.db.llen(self.name)

    def clear(self) -> None:
        self.db.delete(self.name, f"{self.name}:seen")


def threaded_crawler(queue, proxy: str, max_threads: int = 5) -> None:
    """The book's threaded_crawler: worker threads drain the queue; the manager loop
    starts threads while there is work and looks again every SLEEP_TIME seconds."""
    D = Downloader(proxy)
    robots = RobotsCache(D)

    def process_queue() -> None:
        while True:
            try:
                url = queue.pop()
            except KeyError:
                break
            crawl_one(url, D, robots)

    threads: list[threading.Thread] = []
    while threads or len(queue):
        for thread in list(threads):
            if not thread.is_alive():
                threads.remove(thread)
        while len(threads) < max_threads and len(queue):
            thread = threading.Thread(target=process_queue, daemon=True)
            thread.start()
            threads.append(thread)
        time.sleep(SLEEP_TIME)


def _mp_worker(redis_url: str, name: str, proxy: str, max_threads: int) -> None:
    # each process connects after the fork, as the book's mp_threaded_crawler does
    threaded_crawler(RedisQueue(connect(redis_url), name), proxy, max_threads)


def mp_threaded_crawler(urls: list[str], proxy: str, redis_url: str,
                        num_procs: int = 4, max_threads: int = 5) -> None:
    name = f"book:{uuid.uuid4().hex[:8]}"
    client = connect(redis_url)
    q = RedisQueue(client, name)
    q.clear()
    q.push(urls)
    client.close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_mp_worker, args=(redis_url, name, proxy, max_threads))
             for _ in range(num_procs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()


# --- scrapy fleet ---------------------------------------------------------------------

def scrapy_alexa(n: int | None, list_path: Path, sites: int, proxy: str, redis_url: str,
                 work: Path) -> float:
    """``scrapy fleet alexa -n N``, or with ``n`` None plain ``scrapy crawl alexa`` (no
    add-on: Scrapy's own scheduler, one process), with the spider's own settings."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if n is None:
        cmd = [sys.executable, "-m", "scrapy", "crawl", "alexa", "-s", "ADDONS={}"]
    else:
        cmd = [sys.executable, "-m", "scrapy", "fleet", "alexa", "-n", str(n),
               "-s", "FLEET_PROGRESS_INTERVAL=2"]
    cmd += ["-a", f"list={list_path}", "-a", f"max_urls={sites}"]
    for setting in (f"REDIS_URL={redis_url}", f"FLEET_KEY_PREFIX={prefix}",
                    f"FLEET_DATA_DIR={work / 'fleet-data'}", f"FLEET_OUTPUT={work / prefix}-%(name)s.jsonl",
                    f"DOWNLOAD_TIMEOUT={TIMEOUT:g}", f"RETRY_TIMES={RETRIES}", "LOG_LEVEL=INFO"):
        cmd += ["-s", setting]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("https_proxy", "no_proxy", "redis_url")}
    env["http_proxy"] = proxy
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    what = "scrapy crawl" if n is None else f"scrapy fleet -n {n}"
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"{what} exited {proc.returncode}")
    out_file = work / f"{prefix}-alexa.jsonl"
    items = sum(1 for line in out_file.read_text("utf-8").splitlines() if line) if out_file.exists() else 0
    if items != sites:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        raise SystemExit(f"{what} wrote {items} items for {sites} sites")
    return elapsed


# --- the bench ------------------------------------------------------------------------

def control(proxy: str, what: str) -> dict:
    return requests.get(f"http://simweb.control/{what}", proxies={"http": proxy}, timeout=5).json()


def site_rows(sites: int) -> list[TopSite]:
    """The first ``sites`` valid rows of the Tranco head; past its end, made-up names."""
    rows = [r for r in iter_rows(open_list_lines(LIST)) if isinstance(r, TopSite)][:sites]
    extra = "".join(f"{rank},sim{rank}.example\n" for rank in range(len(rows) + 1, sites + 1))
    return rows + [r for r in iter_rows(extra.splitlines(keepends=True)) if isinstance(r, TopSite)]


def main() -> None:
    parser = argparse.ArgumentParser(description="The textbook's crawler table on a simulated web")
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--serial-sites", type=int, default=100,
                        help="sites the serial crawler crawls; its time is scaled to --sites")
    parser.add_argument("--threaded-sites", type=int, default=500,
                        help="sites the 5-thread crawler crawls; its time is scaled to --sites")
    parser.add_argument("--runs", type=int, default=1, help="runs of each fast crawler (median)")
    parser.add_argument("--mp-runs", type=int, default=None,
                        help="runs of the book's 4x5 crawler (default: --runs; it is slow on 5,000 sites)")
    parser.add_argument("--skip", default="",
                        help="comma-separated: serial,threaded,mp,scrapy,fleet1,fleet2,fleet4")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    rows = site_rows(args.sites)
    urls = [r.url for r in rows]
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    list_path = work / "top.csv"
    list_path.write_text("".join(f"{r.rank},{r.domain}\n" for r in rows))

    web = subprocess.Popen([sys.executable, str(REPO / "bench" / "simweb.py"), "--seed", str(SEED)],
                           stdout=subprocess.PIPE, text=True)
    port = int(web.stdout.readline().split()[1])
    proxy = f"http://127.0.0.1:{port}"
    redis_dir = work / "redis"
    redis_url = ensure_embedded_server(redis_dir)

    profiles = [profile(urlsplit(u).hostname or "", SEED) for u in urls]
    chains = [chain_seconds(p, timeout=TIMEOUT, retries=RETRIES) for p in profiles]
    kinds: dict[str, int] = {}
    for p in profiles:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    slowest = max(chains)  # unlimited concurrency: the slowest site's robots+page chain
    latency = sum(chains)  # one request at a time: every chain in a row
    print(f"simulated web: {len(urls)} sites on {proxy}; kinds {kinds}")
    print(f"timeout {TIMEOUT:g} s, {RETRIES} retry; slowest chain {slowest:.2f} s; "
          f"sum of chains {latency:.1f} s", flush=True)

    results: list[tuple[str, float, int, str]] = []  # label, seconds, concurrency, note

    def timed(label: str, fn, runs: int, concurrency: int) -> None:
        times = []
        for _ in range(runs):
            control(proxy, "reset")
            t0 = time.monotonic()
            fn()
            times.append(time.monotonic() - t0)
            served = control(proxy, "stats")
            print(f"  {label}: {times[-1]:.1f} s; proxy served {served['served']} for {served['hosts']} hosts",
                  flush=True)
        results.append((label, statistics.median(times), concurrency,
                        f"median of {runs}" if runs > 1 else ""))

    def scaled(label: str, fn, part_sites: int, concurrency: int) -> None:
        part_sites = min(part_sites, len(urls))
        control(proxy, "reset")
        t0 = time.monotonic()
        fn(urls[:part_sites])
        part = time.monotonic() - t0
        share = sum(chains[:part_sites]) / latency
        print(f"  {label}: {part:.1f} s for {part_sites} sites ({share:.0%} of the latency sum)", flush=True)
        results.append((label, part / share, concurrency,
                        f"scaled from {part_sites} sites" if part_sites < len(urls) else ""))

    if "serial" not in skip:
        scaled("book serial", lambda u: serial_crawler(u, proxy), args.serial_sites, 1)
    if "threaded" not in skip:
        scaled("book threaded, 5 threads", lambda u: threaded_crawler(ListQueue(u), proxy, 5),
               args.threaded_sites, 5)
    if "mp" not in skip:
        timed("book mp 4 proc x 5 threads", lambda: mp_threaded_crawler(urls, proxy, redis_url),
              args.mp_runs or args.runs, 20)
    per_process = 200  # alexa's CONCURRENT_REQUESTS
    if "scrapy" not in skip:
        timed("scrapy crawl alexa (no fleet)",
              lambda: scrapy_alexa(None, list_path, len(urls), proxy, redis_url, work), args.runs, per_process)
    for n in (1, 2, 4):
        if f"fleet{n}" not in skip:
            timed(f"scrapy fleet alexa -n {n}",
                  lambda n=n: scrapy_alexa(n, list_path, len(urls), proxy, redis_url, work),
                  args.runs, per_process * n)

    web.terminate()
    web.wait()
    stop_embedded_server(redis_dir)

    measured = {label: t for label, t, _, _ in results}
    mp = measured.get("book mp 4 proc x 5 threads")
    print()
    print(f"{len(urls)} sites, simulated web (seed {SEED}); timeout {TIMEOUT:g} s, {RETRIES} retry; "
          f"slowest chain {slowest:.2f} s, sum of chains {latency:.1f} s")
    head = (f"| {'crawler':<30} | {'wall s':>7} | {'pages/s':>7} | {'vs 4x5':>7} "
            f"| {'vs book serial 1349.8':>21} | {'vs book 4x5 156.4':>17} | {'in flight':>9} "
            f"| {'bound s':>7} | {'/ bound':>7} | note")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|---|")
    for label, t, concurrency, note in results:
        bound = max(slowest, latency / concurrency)
        cells = [
            f"{t:7.1f}", f"{len(urls) / t:7.1f}",
            f"{mp / t:6.1f}x" if mp else f"{'-':>7}",
            f"{BOOK_SERIAL / t:20.1f}x", f"{BOOK_BEST / t:16.1f}x", f"{concurrency:>9}",
            f"{bound:7.1f}", f"{t / bound:6.2f}x",
        ]
        print(f"| {label:<30} | " + " | ".join(cells) + f" | {note}")


if __name__ == "__main__":
    main()
