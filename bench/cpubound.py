"""A CPU-bound crawl: Scrapy's memory scheduler against `fleet` with 1 and 2 workers.

    python bench/cpubound.py                 # 10,000 pages, 3 runs of each row, ~5 minutes
    python bench/cpubound.py --pages 2000 --runs 1   # smoke test

No network at all: a download handler (``GeneratedPages``, this file) makes every page in
the crawling process, at once. Page N of host ``h<N mod 50>.example`` links to the next
20 pages, so the crawl is all parsing, link extraction, scheduling and the frontier's
work: what the CPU of the machine allows. The spider is tests/spiders/linkspider.py (an
item and the links of every page), ``CONCURRENT_REQUESTS`` 64, no robots.txt.

Rows: plain Scrapy with its memory scheduler (``ADDONS={}``), one fleet worker, and two
fleet workers on one crawl (two processes started together, as ``scrapy fleet -n 2``
does); Redis is the bench's own embedded server over its unix socket. Each row's pages/s
is the pages over the crawl's wall time from the start of its processes to the end of
the last (process start-up included, as a user waits for it), medians of ``--runs``,
and the ratio to plain Scrapy and to one worker measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from scrapy.core.downloader.handlers.base import BaseDownloadHandler
from scrapy.http import HtmlResponse

REPO = Path(__file__).resolve().parent.parent
FANOUT = 20
HOSTS = 50


class GeneratedPages(BaseDownloadHandler):
    """Answers http://h<k>.example/page/<n> with a page linking to the next FANOUT pages,
    up to the PAGES environment variable; made here, no socket."""

    pages = int(os.environ.get("BENCH_PAGES", "10000"))

    async def download_request(self, request):  # noqa: ANN001, ANN201 - Scrapy's API
        try:
            n = int(request.url.rsplit("/", 1)[-1])
        except ValueError:
            n = -1
        if not 0 <= n < self.pages:
            return HtmlResponse(request.url, status=404, body=b"not found", request=request)
        links = "".join(f'<a href="http://h{m % HOSTS}.example/page/{m}">page {m}</a>\n'
                        for m in range(n * FANOUT + 1, min(self.pages, n * FANOUT + FANOUT + 1)))
        body = f"<html><head><title>page {n}</title></head><body>{links}</body></html>"
        return HtmlResponse(request.url, body=body.encode(), encoding="utf-8", request=request)


def run(kind: str, workers: int, pages: int, redis_url: str, work: Path) -> float:
    settings = {"CONCURRENT_REQUESTS": 64, "ROBOTSTXT_OBEY": False, "LOG_LEVEL": "INFO",
                "DOWNLOAD_HANDLERS": '{"http": "cpubound.GeneratedPages"}',
                "TELNETCONSOLE_ENABLED": False}
    if kind == "memory":
        settings["ADDONS"] = "{}"
    else:
        settings |= {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}"}
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(REPO / "tests" / "spiders" / "linkspider.py"),
           "-a", "start_url=http://h0.example/page/0"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "redis_url")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(REPO / "bench"),
                                                     env.get("PYTHONPATH", "")) if p)
    env["BENCH_PAGES"] = str(pages)
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(workers)]
    logs = [p.communicate(timeout=1800)[0] for p in procs]
    elapsed = time.monotonic() - started
    got = sum(int(m.group(1)) for log in logs
              for m in [re.search(r"'response_received_count': (\d+)", log)] if m)
    if any(p.returncode for p in procs) or got != pages:
        print(logs[0][-3000:])
        raise SystemExit(f"{kind} x{workers}: exit {[p.returncode for p in procs]}, {got} of {pages} pages")
    return pages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from scrapy_fleet.redis_server import ensure_embedded_server, stop_embedded_server

    work = Path(tempfile.mkdtemp(prefix="fleet-cpu-"))
    redis_url = ensure_embedded_server(work / "redis")
    rows = [("plain Scrapy (memory scheduler)", "memory", 1), ("fleet, 1 worker", "fleet", 1),
            ("fleet, 2 workers", "fleet", 2)]
    results: dict[str, list[float]] = {}
    print(f"{args.pages} generated pages, {os.cpu_count()} CPUs, {args.runs} runs (medians)\n")
    try:
        for r in range(args.runs):
            for label, kind, workers in rows:
                rate = run(kind, workers, args.pages, redis_url, work)
                results.setdefault(label, []).append(rate)
                print(f"  run {r + 1}: {label:34} {rate:7.1f} pages/s", flush=True)
    finally:
        stop_embedded_server(work / "redis")
    plain = statistics.median(results[rows[0][0]])
    one = statistics.median(results[rows[1][0]])
    print(f"\n{'crawler':34}{'pages/s':>9}{'vs plain':>10}{'vs 1 worker':>13}")
    for label, _, _ in rows:
        rate = statistics.median(results[label])
        print(f"{label:34}{rate:>9.1f}{rate / plain:>9.2f}x{rate / one:>12.2f}x")


if __name__ == "__main__":
    main()
