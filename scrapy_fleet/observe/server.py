"""The crawl's numbers over HTTP, served by the launcher (``--web``) or by ``scrapy fleet
web``: ``/`` the dashboard (static files shipped in this package, no CDN), ``/metrics``
(Prometheus), ``/api/status`` (JSON, the same as ``scrapy fleet SPIDER --status --json``)
and ``/api/history`` (the totals sampled every ``sample_every`` seconds while this server
runs, for the dashboard's charts).

A small threaded HTTP server of the standard library, run on a thread of the process that
serves it: nothing more to install or run. Each request for /metrics or /api/status reads
the crawl's state from Redis; a Redis that cannot be reached answers 503 with the reason,
never a hang.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from scrapy_fleet.observe.metrics import render

logger = logging.getLogger(__name__)

StatusReader = Callable[[], dict[str, Any]]
SAMPLE_EVERY = 2.0  # s between the points of /api/history
HISTORY_POINTS = 1800  # an hour at the default
DEFAULT_WEB_PORT = 6810  # `scrapy fleet web` without --web
STATIC = {  # the dashboard's files (scrapy_fleet/observe/static/) by URL path
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def parse_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` -> (host, port); the host defaults to 127.0.0.1 (not the network)."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--web takes [HOST:]PORT, got {text!r}") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--web: port {number} is out of range")
    return (host.strip("[]") or "127.0.0.1"), number


class StatusServer:
    def __init__(self, spider: str, read_status: StatusReader, host: str = "127.0.0.1",
                 port: int = 0, *, sample_every: float = SAMPLE_EVERY) -> None:
        self.spider = spider
        self._read = read_status
        self._lock = threading.Lock()  # one Redis client: one reading at a time
        self._latest: tuple[float, dict[str, Any]] | None = None  # (monotonic time, status)
        self.sample_every = sample_every
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self._stopped = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fleet-web", daemon=True)
        self._sampler = threading.Thread(target=self._sample, name="fleet-web-sampler", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self._thread.start()
        self._sampler.start()
        return self.url

    def stop(self) -> None:
        self._stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def read(self, *, fresh: bool = False) -> dict[str, Any]:
        """The crawl's status. Pages and scrapers share the sampler's latest reading while
        it is younger than ``sample_every`` (their own polling interval): Redis is read
        once per interval however many dashboards are open. ``fresh``: read it now."""
        with self._lock:
            now = time.monotonic()
            if fresh or self._latest is None or now - self._latest[0] >= self.sample_every:
                self._latest = (now, self._read())
            return self._latest[1]

    # --- history --------------------------------------------------------------------

    def _sample(self) -> None:
        """A point of the totals every ``sample_every`` s (a failed reading is a gap)."""
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                self.history.append(point(self.read(fresh=True)))
            except Exception as exc:  # noqa: BLE001 - a gap in the chart, said in the log
                logger.debug("fleet web: no history point: %s", exc)
            self._stopped.wait(max(0.0, self.sample_every - (time.monotonic() - started)))

    # --- answers --------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        if path in STATIC:
            name, kind = STATIC[path]
            body = resources.files("scrapy_fleet.observe").joinpath("static", name).read_bytes()
            self._send(handler, 200, body, kind)
            return
        if path == "/api/history":
            body = json.dumps({"spider": self.spider, "every": self.sample_every,
                               "points": list(self.history)}).encode()
            self._send(handler, 200, body, "application/json")
            return
        if path not in ("/metrics", "/api/status"):
            self._send(handler, 404, b"not found: try /, /metrics, /api/status or /api/history\n",
                       "text/plain")
            return
        try:
            status = self.read()
        except Exception as exc:  # noqa: BLE001 - any failure is the answer, not a crash
            logger.warning("fleet web: cannot read the crawl's status: %s", exc)
            self._send(handler, 503, f"cannot read the crawl's status: {exc}\n".encode(), "text/plain")
            return
        if path == "/metrics":
            self._send(handler, 200, render(self.spider, status), CONTENT_TYPE_LATEST)
        else:
            body = json.dumps({"spider": self.spider, **status}, default=str).encode()
            self._send(handler, 200, body, "application/json")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes, kind: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(body)


def point(status: dict[str, Any]) -> dict[str, Any]:
    """One point of /api/history: the crawl's totals at the time of its Redis clock."""
    stats = status.get("stats", {})
    return {
        "t": status.get("now") or time.time(),
        **{name: stats.get(name, 0) for name in ("pages", "items", "errors", "acked",
                                                 "pending", "leased")},
        "workers_alive": sum(1 for w in status.get("workers", []) if w.get("alive")),
        "errors_by_kind": dict(status.get("errors_by_kind", {})),
    }


def serve_until_stopped() -> int:
    """``scrapy fleet web``: keep serving (on the server's thread) until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    return 0
