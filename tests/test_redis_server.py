"""The embedded redis-server and connecting to REDIS_URL."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import redis

from scrapy_fleet.redis_server import (
    RedisUnavailable,
    connect,
    ensure_embedded_server,
    find_redis_server,
    redact,
    socket_path,
    stop_embedded_server,
)


@pytest.fixture
def data_dir(tmp_path: Path):
    path = tmp_path / "data"
    yield path
    stop_embedded_server(path)


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


def test_data_survives_a_restart(data_dir: Path):
    client = connect(ensure_embedded_server(data_dir))
    client.set("frontier", b"kept")
    client.close()
    stop_embedded_server(data_dir)
    assert not os.path.exists(socket_path(data_dir))
    assert connect(ensure_embedded_server(data_dir)).get("frontier") == b"kept"


def test_long_data_dirs_get_a_short_socket(tmp_path: Path):
    deep = tmp_path.joinpath(*["nested-directory"] * 8)
    try:
        url = ensure_embedded_server(deep)
        assert len(url) < 110 and connect(url).ping()
    finally:
        stop_embedded_server(deep)


def test_password_in_the_url_is_used_and_never_shown(tmp_path: Path):
    import socket as socketlib
    import subprocess

    with socketlib.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
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
