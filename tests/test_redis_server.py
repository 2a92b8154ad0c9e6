"""The embedded redis-server and connecting to REDIS_URL.

The tests that start a redis-server of their own are marked ``slow``."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import Fleet, fleet_args, fp, free_port, make_project
from local_site import LinkedSite
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import (
    RedisUnavailable,
    UnsafeDirectory,
    answers,
    connect,
    ensure_embedded_server,
    find_redis_server,
    redact,
    socket_path,
    stop_embedded_server,
)
from tls_proxy import TlsProxy


@pytest.fixture
def data_dir(tmp_path: Path):
    path = tmp_path / "data"
    yield path
    stop_embedded_server(path)


@pytest.mark.slow
def test_started_once_and_reused(data_dir: Path):
    url = ensure_embedded_server(data_dir)
    assert url == f"unix://{socket_path(data_dir)}"
    pid = (data_dir / "redis.pid").read_text()
    assert ensure_embedded_server(data_dir) == url
    assert (data_dir / "redis.pid").read_text() == pid
    client = connect(url)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("port") == {"port": "0"}  # a unix socket only


def _start(path: str, queue) -> None:
    queue.put(ensure_embedded_server(path))


@pytest.mark.slow
def test_concurrent_starters_share_one_server(data_dir: Path):
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_start, args=(str(data_dir), queue))
             for _ in range(4)]
    for proc in procs:
        proc.start()
    urls = {queue.get(timeout=60) for _ in procs}
    for proc in procs:
        proc.join(30)
    assert len(urls) == 1
    assert connect(urls.pop()).ping()


@pytest.mark.slow
def test_data_survives_a_restart(data_dir: Path):
    client = connect(ensure_embedded_server(data_dir))
    client.set("frontier", b"kept")
    client.close()
    stop_embedded_server(data_dir)
    assert not os.path.exists(socket_path(data_dir))
    assert connect(ensure_embedded_server(data_dir)).get("frontier") == b"kept"


@pytest.mark.slow
def test_long_data_dirs_get_a_short_socket(tmp_path: Path):
    deep = tmp_path.joinpath(*["nested-directory"] * 8)
    try:
        url = ensure_embedded_server(deep)
        assert len(url) < 110 and connect(url).ping()
    finally:
        stop_embedded_server(deep)


@pytest.mark.slow
def test_password_in_the_url_is_used_and_never_shown(tmp_path: Path):
    port = free_port()
    server = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--requirepass", "s3cret", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://:s3cret@127.0.0.1:{port}/3"
        client = connect(url)
        for _ in range(200):
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                import time

                time.sleep(0.05)
        assert client.connection_pool.connection_kwargs["db"] == 3
        with pytest.raises(redis.AuthenticationError):
            connect(f"redis://:wrong@127.0.0.1:{port}/0").ping()
        assert redact(url) == f"redis://:***@127.0.0.1:{port}/3"
    finally:
        server.terminate()
        server.wait(10)


def test_no_server_binary_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RedisUnavailable, match="no redis-server found"):
        find_redis_server()


# --- nobody else's server, nobody else's eyes on the data ------------------------------


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch):
    """A temp dir of this test's own in place of /tmp, so that squatting it disturbs no one."""
    tmp = tmp_path / "t"
    tmp.mkdir()
    tmp.chmod(0o1777)  # like /tmp: anyone may create entries
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _deep(tmp_path: Path) -> Path:
    return tmp_path.joinpath(*["nested-directory"] * 8)


def _squatter(sock: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """Another user's redis-server listening on ``sock``, with a marker key of theirs."""
    server = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", sock, "--unixsocketperm", "777",
         "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(unix_socket_path=sock).set("squatter", "1")
            return server
        except (redis.ConnectionError, FileNotFoundError):
            assert time.monotonic() < deadline, "the squatter's server did not start"
            time.sleep(0.05)


@pytest.mark.slow
def test_long_data_dirs_get_their_socket_in_a_private_directory(tmp_path: Path, private_tmp: Path):
    deep = _deep(tmp_path)
    # where the socket used to go: a predictable name right in the shared temp dir
    old_path = str(private_tmp / f"scrapy-fleet-{hashlib.sha1(str(deep / 'redis.sock').encode()).hexdigest()[:16]}.sock")
    squatter = _squatter(old_path, tmp_path)
    try:
        url = ensure_embedded_server(deep)
        sock = url.removeprefix("unix://")
        assert sock != old_path and connect(url).get("squatter") is None
        info = os.lstat(os.path.dirname(sock))
        assert os.path.dirname(sock) == str(private_tmp / f"scrapy-fleet-{os.getuid()}")
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == os.getuid()
    finally:
        stop_embedded_server(deep)
        squatter.terminate()
        squatter.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["mode", "owner", "symlink"])
def test_a_squatted_private_directory_is_refused(tmp_path: Path, private_tmp: Path, how: str):
    runtime = private_tmp / f"scrapy-fleet-{os.getuid()}"
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    if how == "symlink":
        runtime.symlink_to(theirs)
    else:
        runtime.mkdir()
        runtime.chmod(0o777)
        if how == "owner":
            if os.getuid() != 0:
                pytest.skip("needs root to give a directory to another user")
            os.chown(runtime, 65534, 65534)
            runtime.chmod(0o700)
    deep = _deep(tmp_path)
    sock = socket_path(deep)
    squatter = _squatter(sock, tmp_path)  # their server, on the very path we would use
    try:
        with pytest.raises(UnsafeDirectory, match=rf"refusing to use the embedded Redis socket in {re.escape(str(runtime))}") as raised:
            ensure_embedded_server(deep)
        expected = {"mode": "its mode is 0777; it must be 0700", "owner": "it belongs to uid 65534",
                    "symlink": "a symlink"}[how]
        assert expected in str(raised.value)
        assert not answers(sock)  # --status and stop never talk to it either
    finally:
        squatter.terminate()
        squatter.wait(10)


def test_a_data_directory_others_may_write_to_is_refused(tmp_path: Path):
    data = tmp_path / "shared"
    data.mkdir()
    data.chmod(0o777)
    with pytest.raises(UnsafeDirectory, match=rf"chmod 700 {re.escape(str(data))}"):
        ensure_embedded_server(data)
    assert not (data / "redis.sock").exists()


@pytest.mark.slow
def test_new_data_directories_and_server_files_are_private(tmp_path: Path):
    data = tmp_path / "new" / "data"
    (data).mkdir(parents=True)
    data.chmod(0o755)  # an existing data directory keeps working as it is ...
    (data / "appendonly.aof").write_bytes(b"")  # ... and a file an older version left
    (data / "appendonly.aof").chmod(0o644)
    try:
        client = connect(ensure_embedded_server(data))
        client.set("frontier", "x")
        client.save()
        client.close()
        for name in ("appendonly.aof", "dump.rdb", "redis.log", "redis.pid", "redis.lock"):
            assert stat.S_IMODE(os.stat(data / name).st_mode) == 0o600, name
    finally:
        stop_embedded_server(data)
    fresh = tmp_path / "fresh"
    try:
        ensure_embedded_server(fresh)
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700
    finally:
        stop_embedded_server(fresh)


@pytest.mark.slow
def test_a_second_server_on_the_same_data_is_never_started(tmp_path: Path):
    # a server that an older version started for this data directory, on another socket
    data = tmp_path / "data"
    data.mkdir()
    other = str(tmp_path / "old.sock")
    subprocess.run(
        [find_redis_server(), "--port", "0", "--unixsocket", other, "--dir", str(data),
         "--daemonize", "yes", "--pidfile", str(data / "redis.pid"), "--appendonly", "yes"],
        check=True, capture_output=True,
    )
    old = redis.Redis(unix_socket_path=other)
    try:
        for _ in range(200):
            if (data / "redis.pid").exists() and answers(other):
                break
            time.sleep(0.05)
        pid = int((data / "redis.pid").read_text())
        with pytest.raises(RedisUnavailable, match=rf"a redis-server \(pid {pid}\) already runs on the data"):
            ensure_embedded_server(data)
        assert not os.path.exists(socket_path(data))
    finally:
        try:
            old.shutdown(nosave=True)
        except redis.ConnectionError:
            pass


@pytest.fixture
def tls(tmp_path: Path, redis_url: str) -> Iterator[TlsProxy]:
    """The session's Redis behind TLS (tests/tls_proxy.py: the bundled server has none)."""
    proxy = TlsProxy(tmp_path, redis_url[len("unix://"):])
    yield proxy
    proxy.stop()


def test_rediss_urls_run_the_frontier_over_tls(tls: TlsProxy, key_prefix: str):
    url = tls.url(f"ssl_ca_certs={tls.ca}")
    client = connect(url)
    assert client.connection_pool.connection_class is redis.SSLConnection
    frontier = RedisFrontier(client, CrawlKeys(key_prefix, "spider"), "w1", url=url)
    assert frontier.open(fresh=True, owner="Spider") in ("new", "fresh")
    result = frontier.flush([(fp(1), "a", 0, b"one"), (fp(1), "a", 0, b"dup")], pop=5)
    assert result.pushed == [True, False] and len(result.popped) == 1
    frontier.add_totals({"pages": 1})
    assert frontier.status()["stats"]["pages"] == 1


def test_an_untrusted_certificate_fails_at_once_saying_how_to_trust_it(tls: TlsProxy,
                                                                        key_prefix: str):
    url = tls.url()  # no ssl_ca_certs: the test CA is unknown to this machine
    frontier = RedisFrontier(connect(url), CrawlKeys(key_prefix, "spider"), "w1", url=url,
                             retry_timeout=60)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable, match=r"certificate is not trusted .*ssl_ca_certs="):
        frontier.open(fresh=True, owner="Spider")
    assert time.monotonic() - started < 30  # not retried for the 60 s deadline


@pytest.mark.slow
def test_a_fleet_crawl_over_rediss(tmp_path: Path, tls: TlsProxy, serve, key_prefix: str):
    site = serve(LinkedSite(40))
    settings = {"REDIS_URL": tls.url(f"ssl_ca_certs={tls.ca}"), "FLEET_KEY_PREFIX": key_prefix}
    crawl = Fleet(make_project(tmp_path / "project"), fleet_args(site.url, settings, "-n", "2"))
    assert crawl.wait() == 0, crawl.text[-3000:]
    assert "finished" in crawl.text and "rediss://127.0.0.1" in crawl.text
    assert set(site.page_fetches().values()) == {1} and len(site.page_fetches()) == 40
