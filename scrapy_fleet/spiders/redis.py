"""``RedisSpider`` and ``RedisCrawlSpider``: scrapy-redis's base spiders, on the fleet.

A spider written for scrapy-redis runs here by changing its import::

    from scrapy_fleet.spiders import RedisSpider   # was: from scrapy_redis.spiders import ...

    class MySpider(RedisSpider):
        name = "myspider_redis"
        redis_key = "myspider:start_urls"      # default "%(name)s:start_urls"

Producers push entries into ``redis_key`` (a list, a set or a sorted set; a list of keys
is read in that order of priority). Every worker takes them in batches of
``redis_batch_size``, makes requests with :meth:`make_request_from_data` (a plain URL, or
scrapy-redis's JSON object) and stores them in the shared frontier before acknowledging
them (``scrapy_fleet.frontier.startkey``): a worker killed mid-feed loses nothing.

Such a crawl is keep-alive, as in scrapy-redis: it never finishes by itself, only on
Ctrl-C/SIGTERM or after ``max_idle_time`` (``FLEET_IDLE_TIMEOUT``,
``MAX_IDLE_TIME_BEFORE_CLOSE``) seconds with nothing to do. See docs/migrating.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from scrapy.spiders import CrawlSpider, Spider

from scrapy_fleet.errors import EXIT_FATAL, record_exit_status
from scrapy_fleet.frontier.entries import request_from_data
from scrapy_fleet.redis_server import connect, resolve_url

if TYPE_CHECKING:
    import redis
    from scrapy import Request
    from scrapy.settings import BaseSettings

DEFAULT_START_URLS_KEY = "%(name)s:start_urls"  # scrapy-redis's REDIS_START_URLS_KEY default


class RedisMixin:
    """What makes a spider read its start requests from Redis (see the module docs)."""

    name: str
    settings: BaseSettings
    redis_key: str | list[str] | None = None  # default REDIS_START_URLS_KEY, or "%(name)s:start_urls"
    redis_batch_size: int | None = None  # default REDIS_START_URLS_BATCH_SIZE, or CONCURRENT_REQUESTS
    redis_encoding: str | None = None  # default REDIS_ENCODING, or "utf-8"
    max_idle_time: float | None = None  # seconds; default FLEET_IDLE_TIMEOUT (0: never)

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)  # type: ignore[misc]
        # keep-alive unless the spider's custom_settings or -s say otherwise
        if settings.getpriority("FLEET_KEEP_ALIVE") in (None, 0):
            settings.set("FLEET_KEEP_ALIVE", True, priority="spider")
        if cls.max_idle_time is not None:
            settings.set("FLEET_IDLE_TIMEOUT", cls.max_idle_time, priority="spider")

    def redis_keys(self) -> list[str]:
        """The start keys, highest priority first, formatted with the spider's name."""
        raw = self.redis_key
        if raw is None:
            raw = self.settings.get("REDIS_START_URLS_KEY") or DEFAULT_START_URLS_KEY
        keys: list[str] = []
        for key in [raw] if isinstance(raw, str) else list(raw):
            formatted = str(key) % {"name": self.name}
            if not formatted.strip():
                raise ValueError(f"{type(self).__name__}.redis_key must not be empty")
            if formatted not in keys:
                keys.append(formatted)
        if not keys:
            raise ValueError(f"{type(self).__name__}.redis_key names no key")
        return keys

    def feed_batch_size(self) -> int:
        size = self.redis_batch_size
        if size is None:
            size = self.settings.getint(
                "REDIS_START_URLS_BATCH_SIZE", self.settings.getint("CONCURRENT_REQUESTS", 16))
        size = int(size)
        if size < 1:
            raise ValueError(f"redis_batch_size must be at least 1, got {size}")
        return size

    def feed_encoding(self) -> str:
        return self.redis_encoding or self.settings.get("REDIS_ENCODING") or "utf-8"

    def make_request_from_data(self, data: bytes) -> Request | Iterable[Request] | None:
        """A request (or several, or None to skip the entry) for one entry taken from
        ``redis_key``; same signature and meaning as scrapy-redis's. Raising
        ``scrapy_fleet.frontier.entries.BadEntry`` (or any error) counts the entry as bad."""
        return request_from_data(data, self.feed_encoding())

    @property
    def server(self) -> redis.Redis:
        """A client of the fleet's Redis, as scrapy-redis spiders have."""
        client = self.__dict__.get("_fleet_server")
        if client is None:
            url = self.settings.get("REDIS_URL") or None
            client = connect(resolve_url(url, self.settings.get("FLEET_DATA_DIR", ".fleet")))
            self.__dict__["_fleet_server"] = client
        return client

    def start_requests(self) -> Iterable[Any]:
        """Nothing: the scheduler reads ``redis_key`` (scrapy-redis's read it here). A
        subclass that overrides it, as scrapy-redis spiders do to add seeds of their own,
        has its requests fed too."""
        return ()

    async def start(self) -> AsyncIterator[Any]:
        # start_urls are not read, as in scrapy-redis: the start requests come from Redis,
        # fed by every worker's FleetScheduler
        from scrapy_fleet.frontier.scheduler import FleetScheduler

        if FleetScheduler.of(self.crawler) is None:  # type: ignore[attr-defined]
            # settings are applied after the spider is made: this is the first place to tell
            record_exit_status(EXIT_FATAL)
            raise RuntimeError(
                f"{type(self).__name__} reads its start requests from Redis through the "
                "fleet frontier; enable it with ADDONS = {'scrapy_fleet.addon.FleetAddon': 0}"
            )
        for item_or_request in self.start_requests():
            yield item_or_request


class RedisSpider(RedisMixin, Spider):
    """A :class:`scrapy.Spider` whose start requests come from ``redis_key``."""


class RedisCrawlSpider(RedisMixin, CrawlSpider):
    """A :class:`scrapy.spiders.CrawlSpider` whose start requests come from ``redis_key``;
    a request made from an entry goes through the rules, as a start URL does."""
