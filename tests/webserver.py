"""A fake web on 127.0.0.1 for the spider tests, and a way to run a crawl in a subprocess.

:class:`FakeWeb` is a threaded HTTP server that is both an origin server and a
forward proxy: a crawl run with ``http_proxy=http://127.0.0.1:PORT`` sends it
``GET http://any.host/path``, and it answers from its route table for that
host and path, so no request ever leaves the machine and no DNS is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # the package may not be pip-installed in the test venv
    sys.path.insert(0, str(REPO_ROOT))
# real pages and lists the tests read, with where each came from (SOURCES.md per folder)
FIXTURES = REPO_ROOT / "tests" / "fixtures"

# Settings for a crawl without the Redis frontier (plain Scrapy scheduler).
PLAIN_SCHEDULER = {
    "SCHEDULER": "scrapy.core.scheduler.Scheduler",
    "DUPEFILTER_CLASS": "scrapy.dupefilters.RFPDupeFilter",
}


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the server stops)


class FakeWeb:
    """Routes keyed by ``(host, path_with_query)``; unknown URLs answer 404."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route | list[Route]] = {}
        self.hits: list[tuple[str, str]] = []
        self.request_headers: list[dict[str, str]] = []  # per hit, same order
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                web._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)  # a client hanging up is normal

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.proxy_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeWeb:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()

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
        handler.send_response(route.status)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(route.body)))
        handler.end_headers()
        handler.wfile.write(route.body)


def _key(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    path = parts.path or "/"
    return parts.netloc.lower(), f"{path}?{parts.query}" if parts.query else path


_RUNNER = r"""
import json, sys
from scrapy.crawler import CrawlerProcess
from scrapy.utils.project import get_project_settings

cfg = json.loads(sys.argv[1])
settings = get_project_settings()
settings.setdict(cfg["settings"], priority="cmdline")
process = CrawlerProcess(settings)
crawler = process.create_crawler(cfg["spider"])
process.crawl(crawler, **cfg["args"])
process.start()
with open(cfg["stats_path"], "w") as f:
    json.dump(crawler.stats.get_stats(), f, default=str)
"""


@dataclass
class CrawlResult:
    returncode: int
    log: str
    stats: dict[str, Any]
    items: list[dict[str, Any]]


def run_crawl(
    spider: str,
    tmp_path: Path,
    web: FakeWeb | None = None,
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    timeout: float = 120,
    frontier: dict[str, str] | None = None,
) -> CrawlResult:
    """Run one crawl in a fresh Python process (cwd = repo root); return its log, stats and items.

    Without ``frontier`` the crawl uses Scrapy's own scheduler; with it (``REDIS_URL``,
    ``FLEET_KEY_PREFIX``), the project's fleet frontier on that Redis.
    """
    output = tmp_path / "output" / "%(name)s.jsonl"
    stats_path = tmp_path / f"stats-{spider}.json"
    all_settings = {
        **(frontier if frontier is not None else PLAIN_SCHEDULER),
        "FLEET_OUTPUT": str(output),
        "FLEET_DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "DEBUG",
        "DOWNLOAD_TIMEOUT": 5,
        **(settings or {}),
    }
    cfg = {"spider": spider, "args": args or {}, "settings": all_settings, "stats_path": str(stats_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(cfg)],
        cwd=REPO_ROOT,
        env=crawl_env(web),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    return CrawlResult(proc.returncode, proc.stderr, stats, read_items(output, spider))


def run_fleet(
    spider: str,
    tmp_path: Path,
    web: FakeWeb,
    workers: int,
    frontier: dict[str, str],
    args: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    timeout: float = 180,
) -> CrawlResult:
    """``scrapy fleet SPIDER -n WORKERS`` on the given Redis; stats are not collected (empty)."""
    output = tmp_path / "output" / "%(name)s.jsonl"
    all_settings = {**frontier, "FLEET_OUTPUT": str(output), "FLEET_DATA_DIR": str(tmp_path / "data"), **(settings or {})}
    cmd = [sys.executable, "-m", "scrapy", "fleet", spider, "-n", str(workers)]
    for name, value in all_settings.items():
        cmd += ["-s", f"{name}={value}"]
    for name, value in (args or {}).items():
        cmd += ["-a", f"{name}={value}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=crawl_env(web), capture_output=True, text=True, timeout=timeout)
    return CrawlResult(proc.returncode, proc.stdout + proc.stderr, {}, read_items(output, spider))


def crawl_env(web: FakeWeb | None) -> dict[str, str]:
    """The environment of a crawl subprocess: this checkout importable, the fake web as proxy."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "redis_url")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if web is not None:
        env["http_proxy"] = web.proxy_url
        env["no_proxy"] = "127.0.0.1,localhost"
    return env


def read_items(output: Path, spider: str) -> list[dict[str, Any]]:
    out_file = Path(str(output) % {"name": spider})
    if not out_file.exists():
        return []
    return [json.loads(line) for line in out_file.read_text("utf-8").split("\n") if line]
