"""A local web site of N linked pages on 127.0.0.1 that counts every fetch.

Page i links to pages 2i+1 and 2i+2 (a binary tree) and back to page 0, so a crawl
from page 0 reaches every page and meets many duplicate links on the way.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LinkedSite:
    def __init__(self, pages: int = 300, delay: float = 0.0) -> None:
        self.pages = pages
        self.delay = delay
        self.fetches: Counter[str] = Counter()
        self._lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                with site._lock:
                    site.fetches[self.path] += 1
                if site.delay:
                    time.sleep(site.delay)
                if self.path == "/robots.txt":
                    self._send(404, b"")
                    return
                try:
                    page = int(self.path.rsplit("/", 1)[-1])
                except ValueError:
                    page = -1
                if not self.path.startswith("/page/") or not 0 <= page < site.pages:
                    self._send(404, b"not found")
                    return
                links = [c for c in (2 * page + 1, 2 * page + 2) if c < site.pages] + [0]
                body = "".join(f'<a href="/page/{c}">p{c}</a> ' for c in links)
                self._send(200, f"<html><title>page {page}</title><body>{body}</body></html>".encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LinkedSite:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def page_fetches(self) -> Counter[str]:
        with self._lock:
            return Counter({p: n for p, n in self.fetches.items() if p.startswith("/page/")})
