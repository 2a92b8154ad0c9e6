"""A real crawl with Redis 0, 0.5 and 2 ms away: fleet and scrapy-redis, pages/s.

    python bench/latency.py                      # 3 runs of each row, ~6 minutes
    python bench/latency.py --pages 1000 --runs 1 --delays 0,2   # smoke test

Redis is the bench's own embedded redis-server, reached through a delaying TCP proxy (a
subprocess of this script: every chunk of bytes is held ``delay / 2`` in each direction,
so one round trip takes ``delay`` more). The crawl is tests/spiders/linkspider.py over a
local site (a subprocess: N pages, each linking to the next 20, answered after
``--page-latency``), one process, ``CONCURRENT_REQUESTS`` = ``--concurrency`` (and twice that per domain). Each row's pages/s is the crawl's responses over Scrapy's
``elapsed_time_seconds`` (start and shutdown of the process left out), as a median of
``--runs``; the ratio is against the same crawler with the proxy at 0 ms in the same run.

``--before REV`` adds the fleet as of git revision REV (checked out into a temporary
worktree), run in the same rounds: the figures of a change against what it changed.

scrapy-redis runs the same spider with its scheduler and dupefilter (``ADDONS={}``: no
fleet), as its README sets them up.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


# --- the delaying proxy (a subprocess: its own interpreter, its own GIL) ---------------
# Threads, not asyncio: an event loop's timers round up to a millisecond (epoll), which
# made "0.5 ms" a 2.5 ms round trip; time.sleep keeps to a few tens of microseconds.

def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    """Forward ``source`` to ``target``, each chunk ``delay`` seconds after it arrived."""
    chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def send() -> None:
        while True:
            due, chunk = chunks.get()
            if not chunk:
                target.shutdown(socket.SHUT_WR)
                return
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            target.sendall(chunk)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    while True:
        try:
            chunk = source.recv(65536)
        except OSError:
            chunk = b""
        chunks.put((time.monotonic() + delay, chunk))
        if not chunk:
            return


def serve_proxy(upstream: str, delay_ms: float) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print("PORT", listener.getsockname()[1], flush=True)
    delay = delay_ms / 1000 / 2
    while True:
        client, _ = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = socket.socket(socket.AF_UNIX)
        server.connect(upstream)
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=_pump, args=(a, b, delay), daemon=True).start()


FANOUT = 20  # links per page: the queue is soon long, so the crawl waits on pages, not links


def serve_site(pages: int, latency: float) -> None:
    from local_site import HTML, LocalServer, send

    def answer(handler) -> None:
        time.sleep(latency)
        try:
            page = int(handler.path.rsplit("/", 1)[-1])
        except ValueError:
            page = -1
        if not handler.path.startswith("/page/") or not 0 <= page < pages:
            send(handler, 404, b"not found", HTML)
            return
        links = "".join(f'<a href="/page/{n}">{n}</a>'
                        for n in range(page * FANOUT + 1, min(pages, page * FANOUT + FANOUT + 1)))
        send(handler, 200, f"<html><title>{page}</title><body>{links}</body></html>".encode(), HTML)

    server = LocalServer(answer)
    server.start()
    print("URL", server.url, flush=True)
    sys.stdin.read()  # until the bench closes our stdin


def _child(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()[1]


# --- one crawl -------------------------------------------------------------------------

def crawl(kind: str, redis_url: str, site_url: str, concurrency: int, pages: int, work: Path,
          repo: Path = REPO) -> float:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    # the fleet's per-host cap is fleet-wide and holds a request until it is acknowledged
    # (its callback done), not only while it downloads: twice the concurrency lets both
    # crawlers keep `concurrency` downloads going on this one-host site
    settings = {"REDIS_URL": redis_url, "CONCURRENT_REQUESTS": concurrency,
                "CONCURRENT_REQUESTS_PER_DOMAIN": 2 * concurrency, "LOG_LEVEL": "INFO",
                "ROBOTSTXT_OBEY": False}
    if kind.startswith("fleet"):
        settings |= {"FLEET_KEY_PREFIX": prefix, "FLEET_DATA_DIR": str(work / "fleet-data")}
    else:
        settings |= {"ADDONS": "{}", "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
                     "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
                     "SCHEDULER_QUEUE_KEY": f"{prefix}:%(spider)s:requests",
                     "SCHEDULER_DUPEFILTER_KEY": f"{prefix}:%(spider)s:dupefilter"}
    cmd = [sys.executable, "-m", "scrapy", "runspider", str(repo / "tests" / "spiders" / "linkspider.py"),
           "-a", f"start_url={site_url}/page/0"]
    for name, value in settings.items():
        cmd += ["-s", f"{name}={value}"]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "redis_url")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    got = re.search(r"'response_received_count': (\d+)", log)
    elapsed = re.search(r"'elapsed_time_seconds': ([\d.]+)", log)
    if proc.returncode != 0 or not got or not elapsed or int(got.group(1)) < pages:
        print(log[-3000:])
        raise SystemExit(f"{kind} crawl failed (exit {proc.returncode})")
    return int(got.group(1)) / float(elapsed.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--page-latency", type=float, default=0.05, help="seconds per page")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--delays", default="0,0.5,2", help="Redis round-trip delays, ms")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kinds", default="fleet,scrapy-redis")
    parser.add_argument("--before", help="also run the fleet as of this git revision")
    args = parser.parse_args()

    from scrapy_fleet.redis_server import ensure_embedded_server, stop_embedded_server

    work = Path(tempfile.mkdtemp(prefix="fleet-latency-"))
    redis_dir = work / "redis"
    socket_path = ensure_embedded_server(redis_dir).removeprefix("unix://")
    site, site_url = _child("--serve-site", str(args.pages), str(args.page_latency))
    delays = [float(d) for d in args.delays.split(",")]
    proxies = {d: _child("--serve-proxy", socket_path, str(d)) for d in delays}
    kinds = args.kinds.split(",")
    repos = {kind: REPO for kind in kinds}
    if args.before:
        before = work / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        kinds.insert(1, f"fleet@{args.before}")
        repos[kinds[1]] = before
    print(f"{args.pages} pages at {args.page_latency * 1000:.0f} ms each, concurrency "
          f"{args.concurrency}, {args.runs} runs (medians); Redis through a delaying proxy\n")
    results: dict[tuple[str, float], list[float]] = {}
    try:
        for run in range(args.runs):
            for kind in kinds:
                for d in delays:
                    url = f"redis://127.0.0.1:{proxies[d][1]}/0"
                    started = time.monotonic()
                    rate = crawl(kind, url, site_url, args.concurrency, args.pages, work, repos[kind])
                    results.setdefault((kind, d), []).append(rate)
                    print(f"  run {run + 1}: {kind:20} {d:4g} ms  {rate:7.1f} pages/s  "
                          f"({time.monotonic() - started:.1f} s wall)", flush=True)
    finally:
        for proc, _ in [*proxies.values(), (site, "")]:
            proc.terminate()
        stop_embedded_server(redis_dir)
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / "before")],
                           capture_output=True)
    width = max(14, *(len(k) + 2 for k in kinds))
    print(f"\n{'crawler':{width}}{'Redis RTT':>10}{'pages/s':>10}{'vs 0 ms':>9}")
    for kind in kinds:
        base = statistics.median(results[(kind, delays[0])])
        for d in delays:
            rate = statistics.median(results[(kind, d)])
            print(f"{kind:{width}}{d:>8g} ms{rate:>10.1f}{rate / base:>8.2f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-proxy":
        serve_proxy(sys.argv[2], float(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--serve-site":
        serve_site(int(sys.argv[2]), float(sys.argv[3]))
    else:
        main()
