"""Shared fixtures: a real redis-server (never a mock) and helpers to run crawls.

One server per test session (the embedded one's binary, on a unix socket in a temp dir);
every test gets its own key prefix, so tests never see each other's keys. Tests that
stop or restart Redis take ``own_redis`` instead: a server of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SCRAPY = [sys.executable, "-m", "scrapy"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("redis")
    url = ensure_embedded_server(data_dir)
    yield url
    stop_embedded_server(data_dir)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The URL of the session's real Redis (use with ``key_prefix``)."""
    return redis_server


@pytest.fixture
def key_prefix() -> str:
    """A FLEET_KEY_PREFIX no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def fleet_settings(redis_url: str, key_prefix: str) -> dict[str, str]:
    """``-s`` settings that put a crawl on the session Redis under its own prefix."""
    return {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix}


class OwnRedis:
    """A redis-server of one test's own, which the test may stop and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ensure_embedded_server(data_dir)

    def stop(self) -> None:
        stop_embedded_server(self.data_dir)

    def start(self) -> None:
        ensure_embedded_server(self.data_dir)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path / "own-redis")
    yield server
    server.stop()


def scrapy_env() -> dict[str, str]:
    """The environment for a ``scrapy`` subprocess: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(TESTS), env.get("PYTHONPATH", "")) if p
    )
    env.pop("REDIS_URL", None)
    return env


def scrapy_args(settings: dict[str, str], spider_args: dict[str, str] | None = None) -> list[str]:
    args: list[str] = []
    for name, value in settings.items():
        args += ["-s", f"{name}={value}"]
    for name, value in (spider_args or {}).items():
        args += ["-a", f"{name}={value}"]
    return args


def run_link_spider(
    cwd: Path, start_url: str, settings: dict[str, str], **popen: object
) -> subprocess.Popen[str]:
    """Start tests/spiders/linkspider.py (a plain spider plus the add-on) in a subprocess."""
    cmd = [
        *SCRAPY, "runspider", str(TESTS / "spiders" / "linkspider.py"),
        *scrapy_args(settings, {"start_url": start_url}),
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=scrapy_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, **popen,  # type: ignore[arg-type]
    )
