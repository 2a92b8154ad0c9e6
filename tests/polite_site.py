"""A local web of several hosts that logs when each request arrives, per host.

Each host is its own little server on its own loopback address (127.0.0.2, 127.0.0.3...:
on Linux all of 127/8 reaches this machine), so to Scrapy and to the frontier they are
distinct hosts with distinct download slots. A hub on 127.0.0.1 links to every host's
first page; host pages form a binary tree (page k links to 2k+1 and 2k+2).

Per host: its robots.txt text (None: 404), a latency per response, and scripted answers
for given paths (e.g. one 429 with Retry-After before the page is served).

Also here, for the politeness tests: ``Worker`` (a ``scrapy`` process whose output is
collected as it runs) and ``gaps`` (inter-arrival times).
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from processes import Output


@dataclass
class Host:
    pages: int = 10
    robots: str | None = None  # robots.txt body; None answers 404
    latency: float = 0.0  # seconds before each answer
    # path -> answers to give first, in order: (status, headers)
    scripted: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Arrival:
    host: str  # "127.0.0.2"
    path: str
    at: float  # time.monotonic() when the request arrived
    status: int = 200
    agent: str = ""  # its User-Agent (tests give each worker its own)


class PoliteSite:
    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.urls: list[str] = []
        for i, host in enumerate(hosts):
            self._servers.append(self._serve(f"127.0.0.{i + 2}", host))
            self.urls.append(self._url(self._servers[-1]))
        self._hub = self._serve("127.0.0.1", None)
        self.hub_url = self._url(self._hub) + "/"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers + [self._hub]]

    @staticmethod
    def _url(server: ThreadingHTTPServer) -> str:
        address, port = server.server_address[:2]
        return f"http://{address}:{port}"

    def _serve(self, address: str, host: Host | None) -> ThreadingHTTPServer:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                arrived = time.monotonic()
                status, headers, body = site._answer(host, self.path)
                if host is not None:
                    with site._lock:
                        site.arrivals.append(Arrival(address, self.path, arrived, status,
                                                     self.headers.get("User-Agent", "")))
                    if host.latency:
                        time.sleep(host.latency)
                self.send_response(status)
                headers = {"Content-Type": "text/html", "Content-Length": str(len(body)), **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        return server

    def _answer(self, host: Host | None, path: str) -> tuple[int, dict[str, str], bytes]:
        if host is None:  # the hub
            links = "".join(f'<a href="{url}/p/0">host {i}</a> ' for i, url in enumerate(self.urls))
            return 200, {}, f"<html><body>{links}</body></html>".encode()
        with self._lock:
            queue = host.scripted.get(path)
            if queue:
                status, headers = queue.pop(0)
                return status, headers, b"<html>come back later</html>"
        if path == "/robots.txt":
            if host.robots is None:
                return 404, {}, b"no robots here"
            return 200, {"Content-Type": "text/plain"}, host.robots.encode()
        found = re.fullmatch(r"/p/(\d+)", path)
        if not found or int(found.group(1)) >= host.pages:
            return 404, {}, b"not found"
        k = int(found.group(1))
        links = "".join(f'<a href="/p/{c}">p{c}</a> ' for c in (2 * k + 1, 2 * k + 2) if c < host.pages)
        return 200, {}, f"<html><title>p{k}</title><body>{links}</body></html>".encode()

    def start(self) -> PoliteSite:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        for server in self._servers + [self._hub]:
            server.shutdown()
            server.server_close()

    # --- what arrived ---------------------------------------------------------------

    def host(self, i: int) -> str:
        return f"127.0.0.{i + 2}"

    def log(self, host: str) -> list[Arrival]:
        with self._lock:
            return sorted((a for a in self.arrivals if a.host == host), key=lambda a: a.at)

    def pages(self, host: str) -> list[str]:
        return [a.path for a in self.log(host) if a.path.startswith("/p/")]

    def robots_fetches(self, host: str) -> int:
        return sum(a.path == "/robots.txt" for a in self.log(host))


def gaps(arrivals: list[Arrival]) -> list[float]:
    times = [a.at for a in arrivals]
    return [b - a for a, b in zip(times, times[1:])]


def summary(values: list[float]) -> str:
    if not values:
        return "no gaps"
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, n={len(values)}"


Worker = Output  # a `scrapy` process whose output is collected as it runs


def total(workers: list[Worker], name: str) -> int:
    return sum(w.stat(name) for w in workers)


def by_host(site: PoliteSite) -> dict[str, list[Arrival]]:
    out: dict[str, list[Arrival]] = defaultdict(list)
    for i in range(len(site.hosts)):
        out[site.host(i)] = site.log(site.host(i))
    return out
