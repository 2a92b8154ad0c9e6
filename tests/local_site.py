"""The local web sites the tests crawl: threaded HTTP servers on loopback addresses only.

- :class:`LinkedSite`: N linked pages on 127.0.0.1 that count every fetch.
- :class:`PoliteSite`: several hosts (127.0.0.2, 127.0.0.3...) that log when each request
  arrives, for the politeness tests.
- :class:`FakeWeb`: an origin server and forward proxy answering any host from a route
  table, for the example spiders (no request leaves the machine, no DNS).

All are built on one :class:`LocalServer`, start and stop as a whole, and work as context
managers; conftest's ``serve`` fixture stops them after a test.
"""

from __future__ import annotations

import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HTML = {"Content-Type": "text/html"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: dict[Any, float] = {}

    def process_request(self, request: Any, client_address: Any) -> None:
        # when the connection came in, before a thread is started for it: on a loaded
        # machine a handler thread can start 100 ms late, and arrival gaps measured there
        # would jitter by as much (HTTP/1.0: one request per connection)
        self.accepted[request] = time.monotonic()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.accepted.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)  # a client hanging up is normal


class LocalServer:
    """A threaded HTTP server on ``host`` and a free port that hands every GET to ``answer``."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None], host: str = "127.0.0.1",
                 protocol: str = "HTTP/1.0") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = protocol

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server((host, 0), Handler)
        address, port = self.server.server_address[:2]
        self.url = f"http://{address}:{port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Answer the request: ``status``, ``headers`` and a Content-Length, then ``body``."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class LocalSite:
    """What the sites share: their servers start and stop together; ``with site:`` works."""

    servers: list[LocalServer]

    def start(self):  # -> the site itself, started
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- LinkedSite ---------------------------------------------------------------------------


class LinkedSite(LocalSite):
    """N linked pages on 127.0.0.1 that count every fetch.

    Page i links to pages 2i+1 and 2i+2 (a binary tree) and back to page 0, so a crawl
    from page 0 reaches every page and meets many duplicate links on the way.
    ``/status/<code>`` answers that status.
    """

    def __init__(self, pages: int = 300, delay: float = 0.0, dead_links_every: int = 0) -> None:
        self.pages = pages
        self.delay = delay
        self.dead_links_every = dead_links_every  # every Nth page also links to a 404
        self.fetches: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.servers = [LocalServer(self._answer)]
        self.url = self.servers[0].url

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        with self._lock:
            self.fetches[path] += 1
        if self.delay:
            time.sleep(self.delay)
        if path == "/robots.txt":
            send(handler, 404, b"", HTML)
            return
        if path.startswith("/status/"):  # /status/<code>: a page that answers <code>
            send(handler, int(path.split("?")[0].rsplit("/", 1)[-1]), b"status", HTML)
            return
        try:
            page = int(path.rsplit("/", 1)[-1])
        except ValueError:
            page = -1
        if not path.startswith("/page/") or not 0 <= page < self.pages:
            send(handler, 404, b"not found", HTML)
            return
        links = [c for c in (2 * page + 1, 2 * page + 2) if c < self.pages] + [0]
        if self.dead_links_every and page % self.dead_links_every == 0:
            links.append(self.pages + page)  # beyond the last page: 404
        body = "".join(f'<a href="/page/{c}">p{c}</a> ' for c in links)
        send(handler, 200, f"<html><title>page {page}</title><body>{body}</body></html>".encode(), HTML)

    def page_fetches(self) -> Counter[str]:
        with self._lock:
            return Counter({p: n for p, n in self.fetches.items() if p.startswith("/page/")})


# --- PoliteSite ---------------------------------------------------------------------------


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


class PoliteSite(LocalSite):
    """A local web of several hosts that logs when each request arrives, per host.

    Each host is its own server on its own loopback address (127.0.0.2, 127.0.0.3...: on
    Linux all of 127/8 reaches this machine), so to Scrapy and to the frontier they are
    distinct hosts with distinct download slots. A hub on 127.0.0.1 links to every host's
    first page; host pages form a binary tree (page k links to 2k+1 and 2k+2).

    Per host: its robots.txt text (None: 404), a latency per response, and scripted
    answers for given paths (e.g. one 429 with Retry-After before the page is served).
    """

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self.servers = [self._serve(self.host(i), host) for i, host in enumerate(hosts)]
        self.urls = [server.url for server in self.servers]
        self.servers.append(self._serve("127.0.0.1", None))
        self.hub_url = self.servers[-1].url + "/"

    def _serve(self, address: str, host: Host | None) -> LocalServer:
        def answer(handler: BaseHTTPRequestHandler) -> None:
            arrived = handler.server.accepted.get(handler.request, time.monotonic())  # type: ignore[attr-defined]
            status, headers, body = self._answer(host, handler.path)
            if host is not None:
                with self._lock:
                    self.arrivals.append(Arrival(address, handler.path, arrived, status,
                                                 handler.headers.get("User-Agent", "")))
                if host.latency:
                    time.sleep(host.latency)
            send(handler, status, body, {**HTML, **headers})

        return LocalServer(answer, address)

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
    """The times between one arrival and the next."""
    times = [a.at for a in arrivals]
    return [b - a for a, b in zip(times, times[1:])]


def summary(values: list[float]) -> str:
    if not values:
        return "no gaps"
    return f"min {min(values):.3f} s, median {statistics.median(values):.3f} s, n={len(values)}"


# --- FakeWeb ------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server stops)


class FakeWeb(LocalSite):
    """An origin server and forward proxy on 127.0.0.1 for the spider tests.

    A crawl run with ``http_proxy=http://127.0.0.1:PORT`` sends it
    ``GET http://any.host/path``, and it answers from its route table, keyed by
    ``(host, path_with_query)``; unknown URLs answer 404.
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route | list[Route]] = {}
        self.hits: list[tuple[str, str]] = []
        self.request_headers: list[dict[str, str]] = []  # per hit, same order
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.servers = [LocalServer(self._serve, protocol="HTTP/1.1")]
        self.proxy_url = self.servers[0].url

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    def add(self, url: str, body: bytes | str = b"", status: int = 200, content_type: str = "text/html", **headers: str) -> None:
        """Serve ``body`` at ``url`` (``http://host/path?query``)."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        all_headers = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
        self.routes[_key(url)] = Route(status=status, body=data, headers=all_headers)

    def redirect(self, url: str, location: str, status: int = 302) -> None:
        self.routes[_key(url)] = Route(status=status, headers={"Location": location})

    def sequence(self, url: str, *answers: tuple[int, bytes | str, dict[str, str]]) -> None:
        """Answer ``url`` with each ``(status, body, headers)`` in turn; the last one repeats."""
        self.routes[_key(url)] = [
            Route(status=status, body=body.encode() if isinstance(body, str) else body, headers={"Content-Type": "text/html; charset=utf-8", **headers})
            for status, body, headers in answers
        ]

    def hang(self, url: str) -> None:
        """``url`` accepts the connection and never answers (a timeout)."""
        self.routes[_key(url)] = Route(hang=True)

    def count(self, url: str) -> int:
        key = _key(url)
        with self._lock:
            return sum(1 for hit in self.hits if hit == key)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        target = handler.path
        if target.startswith("http://") or target.startswith("https://"):
            key = _key(target)
        else:
            key = ((handler.headers.get("Host") or "").lower(), target)
        with self._lock:
            self.hits.append(key)
            self.request_headers.append(dict(handler.headers.items()))
            route = self.routes.get(key) or Route(status=404, body=b"not found", headers={"Content-Type": "text/plain"})
            if isinstance(route, list):
                route = route.pop(0) if len(route) > 1 else route[0]
        if route.hang:
            self._stopping.wait()
            return
        send(handler, route.status, route.body, route.headers)


def _key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts.netloc.lower(), f"{path}?{parts.query}" if parts.query else path
