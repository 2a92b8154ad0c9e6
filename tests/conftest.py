"""Shared fixtures and helpers: a real redis-server (never a mock), local sites, crawls.

One server per test session (the embedded one's binary, on a unix socket in a temp dir);
every test gets its own key prefix, so tests never see each other's keys. Tests that
stop or restart Redis take ``own_redis`` instead: a server of their own.

The sites a test crawls are in local_site.py; ``serve`` starts one for a test and stops it
after. Crawls run as real ``scrapy`` processes (``runspider``, ``run_link_spider``,
``Fleet``, ``run_crawl``...); tests that start one are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from local_site import FakeWeb, Host, LinkedSite, LocalSite, PoliteSite
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect, ensure_embedded_server, stop_embedded_server

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SPIDERS = TESTS / "spiders"
# real pages and lists the tests read, with where each came from (SOURCES.md per folder)
FIXTURES = TESTS / "fixtures"
SCRAPY = [sys.executable, "-m", "scrapy"]
WAIT = 120  # generous upper bound for any one crawl on a loaded 2-core machine

Site = TypeVar("Site", bound=LocalSite)


# --- Redis -----------------------------------------------------------------------------


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


def fp(n: int) -> bytes:
    """A request fingerprint (20 bytes) made from a number."""
    return n.to_bytes(20, "big")


def open_frontier(client: redis.Redis, url: str, key_prefix: str, worker: str = "w1",
                  **kwargs: Any) -> RedisFrontier:
    """A frontier of spider "spider", opened as a worker joining the crawl does."""
    frontier = RedisFrontier(client, CrawlKeys(key_prefix, "spider"), worker, url=url, **kwargs)
    frontier.open(fresh=False)
    return frontier


# --- local sites -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]



@pytest.fixture
def serve() -> Iterator[Callable[[Site], Site]]:
    """``serve(LinkedSite(30))``: start a local site for this test; it is stopped after it."""
    started: list[LocalSite] = []

    def start(site: Site) -> Site:
        started.append(site.start())
        return site

    yield start
    for site in reversed(started):
        site.stop()


# --- processes -------------------------------------------------------------------------


def scrapy_env(web: FakeWeb | None = None) -> dict[str, str]:
    """The environment for a ``scrapy`` subprocess: this checkout first on the path, no
    REDIS_URL or proxy of the caller's; with ``web``, that fake web as the HTTP proxy."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "no_proxy", "redis_url")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(TESTS), env.get("PYTHONPATH", "")) if p
    )
    if web is not None:
        env["http_proxy"] = web.proxy_url
        env["no_proxy"] = "127.0.0.1,localhost"
    return env


def scrapy_args(settings: dict[str, Any], spider_args: dict[str, Any] | None = None) -> list[str]:
    args: list[str] = []
    for name, value in settings.items():
        args += ["-s", f"{name}={value}"]
    for name, value in (spider_args or {}).items():
        args += ["-a", f"{name}={value}"]
    return args


def runspider_args(spider: str | Path, settings: dict[str, Any],
                   spider_args: dict[str, Any] | None = None) -> list[str]:
    """``runspider SPIDER -s ... -a ...``; SPIDER is a file in tests/spiders/ or a path."""
    return ["runspider", str(SPIDERS / spider), *scrapy_args(settings, spider_args)]


def scrapy(cwd: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """Run one ``scrapy`` command to its end; its stdout and stderr apart."""
    return subprocess.run([*SCRAPY, *args], cwd=cwd, env=env or scrapy_env(), capture_output=True,
                          text=True, timeout=timeout)


def stat(text: str, name: str) -> int:
    """A counter from the Scrapy stats a process dumped in its log when it closed."""
    found = re.search(rf"'{re.escape(name)}': (\d+)", text)
    return int(found.group(1)) if found else 0


class Output:
    """A ``scrapy`` process whose output (stdout and stderr) is collected as it runs."""

    def __init__(self, cwd: Path, args: list[str], name: str = "scrapy", **popen: Any) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [*SCRAPY, *args], cwd=cwd, env=scrapy_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, **popen,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = WAIT) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(regex.search(line) for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0, f"no line matching {pattern!r} in {self.name}'s output:\n{self.text}"
                self._changed.wait(left)

    def finish(self, timeout: float = WAIT) -> int:
        """The exit status; a process still running after ``timeout`` is killed."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._thread.join(10)
        return code

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def stat(self, name: str) -> int:
        return stat(self.text, name)


def total(processes: list[Output], name: str) -> int:
    """A stats counter summed over processes."""
    return sum(p.stat(name) for p in processes)


def finish_all(processes: list[Output]) -> list[Output]:
    """Wait for every process to end; each must exit 0 (else: the tail of each one's output)."""
    codes = [p.finish() for p in processes]
    assert codes == [0] * len(processes), "\n\n".join(p.text[-3000:] for p in processes)
    return processes


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (an event, not a fixed sleep); return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def runspider(cwd: Path, spider: str | Path, settings: dict[str, Any],
              spider_args: dict[str, Any] | None = None, **popen: Any) -> Output:
    """Start ``scrapy runspider`` on a file in tests/spiders/ (or a path)."""
    return Output(cwd, runspider_args(spider, settings, spider_args), Path(spider).stem, **popen)


def run_link_spider(cwd: Path, start_url: str, settings: dict[str, str]) -> Output:
    """Start tests/spiders/linkspider.py (a plain spider plus the add-on)."""
    return runspider(cwd, "linkspider.py", settings, {"start_url": start_url})


def crawl_under_way(cwd: Path, site: LinkedSite, settings: dict[str, str], pages: int) -> Output:
    """A link spider crawling ``site`` from its page 0, once ``pages`` pages are fetched."""
    worker = run_link_spider(cwd, f"{site.url}/page/0", settings)
    wait_for(lambda: len(site.page_fetches()) >= pages, what=f"{pages} pages fetched")
    return worker


def run_link_spiders(cwd: Path, start_url: str, settings: dict[str, str],
                     workers: int = 3) -> list[Output]:
    """``workers`` link spiders on one crawl, run to the end; each must exit 0."""
    return finish_all([run_link_spider(cwd, start_url, settings) for _ in range(workers)])


# --- ``scrapy fleet`` on tests/fleetproject --------------------------------------------

SPIDER = "links"  # tests/spiders/linkspider.py, via tests/fleetproject/settings.py


def make_project(directory: Path) -> Path:
    """A directory whose scrapy.cfg points at tests/fleetproject (the link spider)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scrapy.cfg").write_text("[settings]\ndefault = fleetproject.settings\n")
    return directory


class Fleet(Output):
    """One ``scrapy fleet`` process, its output collected as it runs."""

    def __init__(self, cwd: Path, args: list[str], name: str = "fleet") -> None:
        super().__init__(cwd, ["fleet", *args], name)

    def wait(self, timeout: float = WAIT) -> int:
        return self.finish(timeout)


def fleet_args(site_url: str, settings: dict[str, str], *extra: str, spider: str = SPIDER) -> list[str]:
    return [spider, *extra, *scrapy_args(settings, {"start_url": f"{site_url}/page/0"})]


def crawl_hosts(directory: Path, settings: dict[str, str], hosts: int, pages: int) -> None:
    """A ``scrapy fleet -n 2`` crawl of ``hosts`` local hosts of ``pages`` pages each (one
    download slot each, so a split crawl spreads them over its partitions): it finishes,
    exit 0, having fetched every page once."""
    site = PoliteSite([Host(pages=pages) for _ in range(hosts)]).start()
    try:
        fleet = Fleet(make_project(directory),
                      ["links", "-n", "2", *scrapy_args(settings, {"start_url": site.hub_url})])
        assert fleet.wait() == 0, fleet.text[-3000:]
        assert "finished" in fleet.text
    finally:
        site.stop()
    for i in range(hosts):
        fetched = site.pages(site.host(i))
        assert len(fetched) == pages and len(set(fetched)) == pages, (i, fetched)  # each once


def frontier(redis_url: str, key_prefix: str, spider: str = SPIDER) -> RedisFrontier:
    """A frontier of the crawl to look at (status) or write to, on its own connection."""
    return RedisFrontier(connect(redis_url), CrawlKeys(key_prefix, spider), "test", url=redis_url,
                         lease_timeout=3.0)


# --- the example project's spiders (fleet_examples), against a FakeWeb ------------------

# Settings for a crawl without the Redis frontier (plain Scrapy scheduler).
PLAIN_SCHEDULER = {
    "SCHEDULER": "scrapy.core.scheduler.Scheduler",
    "DUPEFILTER_CLASS": "scrapy.dupefilters.RFPDupeFilter",
}

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
    timeout: float = WAIT,
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
        cwd=REPO,
        env=scrapy_env(web),
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
    proc = scrapy(REPO, "fleet", spider, "-n", str(workers), *scrapy_args(all_settings, args),
                  env=scrapy_env(web), timeout=timeout)
    return CrawlResult(proc.returncode, proc.stdout + proc.stderr, {}, read_items(output, spider))


def read_items(output: Path, spider: str) -> list[dict[str, Any]]:
    out_file = Path(str(output) % {"name": spider})
    if not out_file.exists():
        return []
    return [json.loads(line) for line in out_file.read_text("utf-8").split("\n") if line]
