"""The launcher's view of the crawl in Redis: its status and how its workers ended.

The launcher never crawls: it only reads. It keeps one connection, opened on first use,
and a read that fails (Redis away) answers None instead of raising, so that the progress
line and the summary can say so and the children keep being supervised.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import redis

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import FrontierFault, RedisFrontier
from scrapy_fleet.redis_server import RedisUnavailable, connect, redact


def launcher_frontier(url: str, keys: CrawlKeys, config: FleetConfig) -> RedisFrontier:
    """A frontier handle for the launcher's own reads and set-up (it never leases)."""
    return RedisFrontier(
        connect(url),
        keys,
        f"{socket.gethostname()}:{os.getpid()}:launcher",
        url=url,
        lease_timeout=config.lease_timeout,
        concurrency_per_slot=config.concurrency_per_slot,  # to say when hosts are at it
        download_delay=config.download_delay,  # a host's delay unless Redis has its own
        # short: a launcher that waits on Redis cannot watch its children meanwhile
        retry_timeout=min(2.0, config.redis_retry_timeout),
        **config.layout_options(),
    )


class CrawlWatch:
    def __init__(self, url: str, keys: CrawlKeys, config: FleetConfig) -> None:
        self.url = url
        self.keys = keys
        self.config = config
        self.error: str | None = None  # why the last read failed, None if it worked
        self._frontier: RedisFrontier | None = None

    def _read(self, read: str) -> Any:
        try:
            if self._frontier is None:
                self._frontier = launcher_frontier(self.url, self.keys, self.config)
            value = getattr(self._frontier, read)()
        except (RedisUnavailable, FrontierFault) as exc:
            self.error = str(exc)
            return None
        except redis.RedisError as exc:
            # an answer nobody foresaw (a managed Redis's restriction...): the launcher
            # says it and keeps watching its workers, it does not die with them
            self.error = f"Redis at {redact(self.url)} answered {type(exc).__name__}: {exc}"
            return None
        self.error = None
        return value

    def status(self) -> dict[str, Any] | None:
        """The crawl's status (RedisFrontier.status), or None if Redis cannot be read."""
        return self._read("status")

    def outcomes(self) -> dict[str, dict[str, Any]] | None:
        """Worker id -> the outcome it recorded when it closed, or None if unreadable."""
        return self._read("outcomes")

    def close(self) -> None:
        if self._frontier is not None:
            self._frontier.client.close()
            self._frontier = None
