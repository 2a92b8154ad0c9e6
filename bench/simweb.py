"""A simulated web on 127.0.0.1: one asyncio forward proxy that answers for every host name.

Crawlers reach it as an HTTP proxy (``http_proxy=http://127.0.0.1:PORT``) and send the
absolute-form request line ``GET http://host/path HTTP/1.1``; nothing leaves the machine.
Every host gets a deterministic profile from (seed, host name):

=========  =====  ==================================================================
kind       share  behaviour (each request waits the host's latency first)
=========  =====  ==================================================================
normal     ~83%   latency 100-200 ms; robots.txt disallows /private/
slow        10%   latency 1-2.5 s on every request (kept below the 3 s timeout)
blocked      2%   robots.txt disallows everything (a polite crawler stops there)
reset      1.5%   pages: the connection is closed without an answer
error500   1.5%   pages: HTTP 500
hang         2%   pages: no answer for 60 s (beyond any crawler's timeout)
=========  =====  ==================================================================

``GET http://simweb.control/stats`` returns the requests served per kind of path, and
``/reset`` clears them. Run standalone: ``python bench/simweb.py [--port P] [--seed S]``
(prints ``PORT <n>`` once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

HANG_SECONDS = 60.0


@dataclass(frozen=True)
class HostProfile:
    kind: str
    latency: float  # seconds before each answer


def profile(host: str, seed: int = 1) -> HostProfile:
    digest = hashlib.sha256(f"{seed}:{host.lower()}".encode()).digest()
    r = int.from_bytes(digest[:8], "big") / 2**64
    jitter = int.from_bytes(digest[8:16], "big") / 2**64
    normal = 0.100 + 0.100 * jitter
    if r < 0.10:
        # below the crawlers' 3 s timeout with a margin: a host at 2.99 s would time out
        # or not by chance, and the lower bound below could not tell which
        return HostProfile("slow", 1.0 + 1.5 * jitter)
    if r < 0.12:
        return HostProfile("blocked", normal)
    if r < 0.135:
        return HostProfile("reset", normal)
    if r < 0.15:
        return HostProfile("error500", normal)
    if r < 0.17:
        return HostProfile("hang", normal)
    return HostProfile("normal", normal)


def chain_seconds(p: HostProfile, *, timeout: float, retries: int) -> float:
    """The least time one polite crawler needs for a site: robots.txt, then its page.

    ``retries``: how often the crawler retries a failed page (timeouts, resets and 5xx
    all count, as in Scrapy's RetryMiddleware).
    """
    robots = p.latency
    if p.kind == "blocked":
        return robots
    attempts = 1 + retries if p.kind in ("reset", "error500", "hang") else 1
    per_attempt = timeout if p.kind == "hang" else p.latency
    return robots + attempts * per_attempt


def page(host: str, path: str) -> bytes:
    links = "".join(f'<a href="http://{host}/page/{i}">page {i}</a> ' for i in range(3))
    return (f"<!DOCTYPE html><html><head><title>{host}</title></head><body><h1>{host}{path}"
            f"</h1>{links}<a href=\"/private/x\">private</a></body></html>").encode()


class SimWeb:
    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.served: Counter[str] = Counter()
        self.hosts: set[str] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, version = line.decode("latin-1").split()
                except ValueError:
                    return
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if int(headers.get("content-length", "0") or 0):
                    await reader.readexactly(int(headers["content-length"]))
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close" \
                    and headers.get("proxy-connection", "").lower() != "close"
                if not await self.answer(method, target, headers, writer, keep):
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def answer(self, method: str, target: str, headers: dict[str, str],
                     writer: asyncio.StreamWriter, keep: bool) -> bool:
        parts = urlsplit(target)
        host = (parts.hostname or headers.get("host", "").split(":")[0]).lower()
        path = parts.path or "/"
        if host == "simweb.control":
            if path == "/reset":
                self.served.clear()
                self.hosts.clear()
            body = json.dumps({"served": self.served, "hosts": len(self.hosts)}).encode()
            self.send(writer, 200, body, keep, "application/json")
            await writer.drain()
            return True
        p = profile(host, self.seed)
        await asyncio.sleep(p.latency)
        robots = path == "/robots.txt"
        self.served["robots" if robots else "page"] += 1
        if not robots:
            self.hosts.add(host)
        if robots:
            rules = "Disallow: /" if p.kind == "blocked" else "Disallow: /private/"
            self.send(writer, 200, f"User-agent: *\n{rules}\n".encode(), keep, "text/plain")
        elif p.kind == "reset":
            self.served["reset"] += 1
            writer.transport.abort()
            return False
        elif p.kind == "hang":
            self.served["hang"] += 1
            await asyncio.sleep(HANG_SECONDS)
            writer.transport.abort()
            return False
        elif p.kind == "error500":
            self.served["500"] += 1
            self.send(writer, 500, b"<html><title>500</title>Internal Server Error</html>", keep)
        else:
            self.send(writer, 200, page(host, path), keep)
        await writer.drain()
        return True

    @staticmethod
    def send(writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool,
             ctype: str = "text/html; charset=utf-8") -> None:
        reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(status, "X")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n")
        writer.write(head.encode() + body)


async def serve(port: int, seed: int) -> None:
    web = SimWeb(seed)
    server = await asyncio.start_server(web.handle, "127.0.0.1", port, backlog=4096, limit=1 << 16)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: F401  (faster if present; not required)

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(args.port, args.seed))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
