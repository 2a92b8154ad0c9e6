"""Politeness benchmark: does N workers' traffic to one host look like one crawler's?

    python bench/politeness.py                       # -n 1 2 4, delay 0.25 s, ~3 minutes
    python bench/politeness.py -n 1 4 --pages 20     # quicker

A simulated web of ``--hosts`` hosts (each its own loopback address, 127.0.0.2, .3...,
``--pages`` pages each, all linked from the first) records when every request arrives. For each N it runs:

- scrapy-fleet: N ``scrapy runspider`` processes with the fleet add-on (as ``scrapy fleet
  -n N`` runs them), DOWNLOAD_DELAY = ``--delay``;
- scrapy-redis: N plain Scrapy processes sharing scrapy-redis's scheduler and dupefilter,
  same DOWNLOAD_DELAY (Scrapy's per-process delay, randomized 0.5x-1.5x by default).

and reports, per host, the minimum and median gap between two arrivals, then the worst
minimum and the median of the per-host medians. With a per-process delay the gaps shrink
as N grows (the N x problem); with the fleet they stay at the delay.

This file is also the benchmark's spider (``scrapy runspider bench/politeness.py``).
scrapy-redis is a bench-only dependency: ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import scrapy

REPO = Path(__file__).resolve().parent.parent


class PolitenessBenchSpider(scrapy.Spider):
    name = "politeness_bench"
    custom_settings = {"TELNETCONSOLE_ENABLED": False, "LOG_LEVEL": "INFO", "ITEM_PIPELINES": {}}

    def __init__(self, start_url: str = "", **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [start_url]

    def parse(self, response):
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)


# --- the simulated web --------------------------------------------------------------------


class Web:
    def __init__(self, hosts: int, pages: int) -> None:
        self.pages = pages
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        self.servers = [self._server(f"127.0.0.{i + 2}") for i in range(hosts)]
        self.hub = self._server("127.0.0.1", hub=True)
        for s in [*self.servers, self.hub]:
            threading.Thread(target=s.serve_forever, daemon=True).start()

    def _server(self, address: str, hub: bool = False) -> ThreadingHTTPServer:
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                now = time.monotonic()
                if hub:
                    body = "".join(f'<a href="{u}/p/0">h</a>' for u in web.urls()).encode()
                else:
                    with web.lock:
                        web.arrivals.setdefault(address, []).append(now)
                    # page 0 links to every page: the queue is full from the start, so
                    # only politeness limits the pace
                    links = range(1, web.pages) if self.path == "/p/0" else []
                    body = "".join(f'<a href="/p/{c}">p</a>' for c in links).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        return server

    def urls(self) -> list[str]:
        return [f"http://{s.server_address[0]}:{s.server_address[1]}" for s in self.servers]

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}/"

    def reset(self) -> None:
        with self.lock:
            self.arrivals = {}

    def gaps(self) -> dict[str, list[float]]:
        with self.lock:
            return {h: [b - a for a, b in zip(sorted(t), sorted(t)[1:])] for h, t in self.arrivals.items()}

    def stop(self) -> None:
        for s in [*self.servers, self.hub]:
            s.shutdown()
            s.server_close()


# --- runs ---------------------------------------------------------------------------------


def run(kind: str, n: int, web: Web, redis_url: str, delay: float, workdir: Path, timeout: float) -> dict:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    settings = {"DOWNLOAD_DELAY": str(delay), "ROBOTSTXT_OBEY": "False", "REDIS_URL": redis_url}
    if kind == "scrapy-fleet":
        settings |= {"ADDONS": '{"scrapy_fleet.addon.FleetAddon": 0}', "FLEET_KEY_PREFIX": prefix}
    else:
        settings |= {
            "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
            "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
            "SCHEDULER_QUEUE_KEY": f"{prefix}:%(spider)s:requests",
            "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:%(spider)s:dupefilter",
            # keep idle workers alive while others still add links (scrapy-redis's own knob)
            "SCHEDULER_IDLE_BEFORE_CLOSE": "1",
        }
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(Path(__file__).resolve()),
           "-a", f"start_url={web.hub_url}"]
    for k, v in settings.items():
        cmd += ["-s", f"{k}={v}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("REDIS_URL", None)
    web.reset()
    started = time.monotonic()
    logs = [open(workdir / f"{kind}-{n}-{i}.log", "w") for i in range(n)]
    procs = [subprocess.Popen(cmd, cwd=workdir, env=env, stdout=f, stderr=subprocess.STDOUT) for f in logs]
    try:
        for p in procs:
            p.wait(max(1.0, timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
    for f in logs:
        f.close()
    elapsed = time.monotonic() - started
    gaps = web.gaps()
    fetched = sum(len(g) + 1 for g in gaps.values())
    per_host = {h: (min(g), statistics.median(g)) for h, g in gaps.items() if g}
    return {
        "kind": kind, "n": n, "seconds": elapsed, "fetched": fetched,
        "min": min(m for m, _ in per_host.values()),
        "median": statistics.median(md for _, md in per_host.values()),
        "codes": [p.returncode for p in procs],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--delay", type=float, default=0.25)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    from scrapy_fleet.redis_server import ensure_embedded_server, stop_embedded_server

    try:
        import scrapy_redis  # noqa: F401
    except ImportError:
        raise SystemExit("scrapy-redis is needed for the comparison: pip install -e .[bench]")

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        workdir = Path(tmp)
        redis_url = ensure_embedded_server(workdir / "redis")
        web = Web(args.hosts, args.pages)
        rows = []
        try:
            for n in args.n:
                for kind in ("scrapy-fleet", "scrapy-redis"):
                    result = run(kind, n, web, redis_url, args.delay, workdir, args.timeout)
                    rows.append(result)
                    print(f"  {kind:12} -n {n}: {result['fetched']} pages in {result['seconds']:.1f} s, "
                          f"min gap {result['min']:.3f} s, median {result['median']:.3f} s "
                          f"(exit codes {result['codes']})", file=sys.stderr)
        finally:
            web.stop()
            stop_embedded_server(workdir / "redis")

    print(f"\nDOWNLOAD_DELAY = {args.delay} s, {args.hosts} hosts x {args.pages} pages; "
          f"gaps between arrivals at one host (min: worst host; median: of per-host medians)\n")
    print("| scheduler | -n | min gap (s) | median gap (s) | pages | wall (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['n']} | {r['min']:.3f} | {r['median']:.3f} | "
              f"{r['fetched']} | {r['seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
