"""Helpers for the ``scrapy fleet`` tests: a temp project, launching, waiting on events."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import SCRAPY, scrapy_args, scrapy_env
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect

SPIDER = "links"  # tests/spiders/linkspider.py, via tests/fleetproject/settings.py


def make_project(directory: Path) -> Path:
    """A directory whose scrapy.cfg points at tests/fleetproject (the link spider)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scrapy.cfg").write_text("[settings]\ndefault = fleetproject.settings\n")
    return directory


class Fleet:
    """One ``scrapy fleet`` process, its output in a file."""

    def __init__(self, cwd: Path, args: list[str], name: str = "fleet") -> None:
        self.output = cwd / f"{name}-{time.monotonic_ns()}.out"
        self._file = open(self.output, "w")
        self.proc = subprocess.Popen(
            [*SCRAPY, "fleet", *args], cwd=cwd, env=scrapy_env(),
            stdout=self._file, stderr=subprocess.STDOUT, text=True,
        )

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._file.close()

    @property
    def text(self) -> str:
        return self.output.read_text()


def fleet_args(site_url: str, settings: dict[str, str], *extra: str, spider: str = SPIDER) -> list[str]:
    return [spider, *extra, *scrapy_args(settings, {"start_url": f"{site_url}/page/0"})]


def frontier(redis_url: str, key_prefix: str, spider: str = SPIDER) -> RedisFrontier:
    return RedisFrontier(connect(redis_url), CrawlKeys(key_prefix, spider), "test", url=redis_url,
                         lease_timeout=3.0)


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy (an event, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
