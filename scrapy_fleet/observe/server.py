"""The crawl's numbers over HTTP: ``/metrics`` (Prometheus), ``/api/status`` (JSON, the
same as ``scrapy fleet SPIDER --status --json``) and ``/`` (a page that reloads itself).

A small threaded HTTP server of the standard library, run on a thread of the process that
serves it (the launcher, or ``scrapy fleet web``): nothing more to install or run. Each
request reads the crawl's state from Redis; a Redis that cannot be reached answers 503
with the reason, never a hang.
"""

from __future__ import annotations

import html
import json
import logging
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from scrapy_fleet.observe.metrics import COUNTERS, GAUGES, render

logger = logging.getLogger(__name__)

StatusReader = Callable[[], dict[str, Any]]
REFRESH_SECONDS = 2
DEFAULT_WEB_PORT = 6810  # `scrapy fleet web` without --web


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
                 port: int = 0) -> None:
        self.spider = spider
        self._read = read_status
        self._lock = threading.Lock()  # one Redis client: one reading at a time
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server._answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fleet-web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        if path not in ("/", "/metrics", "/api/status"):
            self._send(handler, 404, b"not found: try /, /metrics or /api/status\n", "text/plain")
            return
        try:
            with self._lock:
                status = self._read()
        except Exception as exc:  # noqa: BLE001 - any failure is the answer, not a crash
            logger.warning("fleet web: cannot read the crawl's status: %s", exc)
            self._send(handler, 503, f"cannot read the crawl's status: {exc}\n".encode(), "text/plain")
            return
        if path == "/metrics":
            self._send(handler, 200, render(self.spider, status), CONTENT_TYPE_LATEST)
        elif path == "/api/status":
            body = json.dumps({"spider": self.spider, **status}, default=str).encode()
            self._send(handler, 200, body, "application/json")
        else:
            self._send(handler, 200, page(self.spider, status).encode(), "text/html; charset=utf-8")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, body: bytes, kind: str) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(body)


def page(spider: str, status: dict[str, Any]) -> str:
    """A plain page of the crawl's numbers and workers, reloaded every REFRESH_SECONDS."""
    stats, state = status.get("stats", {}), status.get("state", {})
    # the numbers of /metrics (defined once, in metrics.py), by their stats field
    totals = "".join(
        f"<tr><th title='{html.escape(n.help, quote=True)}'>{n.field.replace('_', ' ')}</th>"
        f"<td>{int(stats.get(n.field, 0)):,}</td></tr>" for n in (*COUNTERS, *GAUGES))
    workers = "".join(
        f"<tr><td>{html.escape(w['id'])}</td><td>{'alive' if w['alive'] else 'dead'}</td>"
        f"<td>{w['last_heartbeat_s']:.1f} s ago</td><td>{'seeding' if w['seeding'] else ''}</td></tr>"
        for w in status.get("workers", []))
    waiting = status.get("waiting")
    why = f"<p>Idle workers wait: {html.escape(str(waiting))}</p>" if waiting else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        f"<title>scrapy-fleet: {html.escape(spider)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 12px;text-align:left}"
        "th{font-weight:normal;color:#555}</style></head><body>"
        f"<h1>{html.escape(spider)}: {html.escape(state.get('status', 'no crawl'))}</h1>"
        f"<p>seen {int(status.get('seen', 0)):,} URLs</p>{why}"
        f"<table>{totals}</table><h2>Workers</h2>"
        f"<table><tr><th>worker</th><th>state</th><th>heartbeat</th><th></th></tr>{workers}</table>"
        "<p><a href='/metrics'>/metrics</a> · <a href='/api/status'>/api/status</a></p>"
        "</body></html>"
    )


def serve_until_stopped() -> int:
    """``scrapy fleet web``: keep serving (on the server's thread) until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    return 0
