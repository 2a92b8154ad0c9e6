"""The fleet's dupefilter: binary request fingerprints, checked against the crawl's
seen-set in Redis (exact or Bloom: scrapy_fleet/frontier/seenset.py).

With :class:`~scrapy_fleet.frontier.scheduler.FleetScheduler` the seen-check happens
inside the push script (dedupe + enqueue in one round trip), so the scheduler only asks
this class for fingerprints and for logging. ``request_seen`` works on its own too, for
projects that keep another scheduler but want one seen-set for all their processes: it
runs the same check-and-add script, one round trip per request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.dupefilters import BaseDupeFilter
from scrapy.utils.httpobj import urlparse_cached

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.redis_server import connect, resolve_url

if TYPE_CHECKING:
    import redis
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.utils.request import RequestFingerprinterProtocol
    from typing_extensions import Self

logger = logging.getLogger(__name__)


class FleetDupeFilter(BaseDupeFilter):
    def __init__(
        self,
        *,
        fingerprinter: RequestFingerprinterProtocol,
        debug: bool = False,
        keys: CrawlKeys | None = None,
        redis_url: str | None = None,
        data_dir: str = ".fleet",
        client: redis.Redis | None = None,
        layout_options: dict[str, Any] | None = None,
    ) -> None:
        self.fingerprinter = fingerprinter
        self.debug = debug
        self.keys = keys
        self._redis_url = redis_url
        self._data_dir = data_dir
        self._client = client
        self._layout_options = layout_options or {}  # FleetConfig.layout_options()
        self._frontier: RedisFrontier | None = None
        self._logged_once = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        config = FleetConfig.from_settings(crawler.settings)
        spider_name = crawler.spider.name if crawler.spider else "default"
        return cls(
            fingerprinter=crawler.request_fingerprinter,
            debug=crawler.settings.getbool("DUPEFILTER_DEBUG"),
            keys=CrawlKeys(config.key_prefix, spider_name),
            redis_url=config.redis_url,
            data_dir=config.data_dir,
            layout_options=config.layout_options(),
        )

    def fingerprint(self, request: Request) -> bytes:
        """20 raw bytes (SHA-1), not 40 hex characters: less than half the memory."""
        return self.fingerprinter.fingerprint(request)

    def request_seen(self, request: Request) -> bool:
        if self._frontier is None:  # connect lazily: FleetScheduler never calls this
            assert self.keys is not None, "FleetDupeFilter needs the crawl's keys"
            url = resolve_url(self._redis_url, self._data_dir)
            if self._client is None:
                self._client = connect(url)
            # only its seen-set is used: this process never leases
            self._frontier = RedisFrontier(self._client, self.keys, "dupefilter", url=url,
                                           **self._layout_options)
            self._frontier.read_layout()  # a split crawl's seen-set is in its partitions
        # a split crawl keeps each host's fingerprints in the host's partition
        host = urlparse_cached(request).hostname or ""
        return self._frontier.seen_add([self.fingerprint(request)], slots=[host])[0]

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug:
            logger.debug("Filtered duplicate request: %s", request, extra={"spider": spider})
        elif not self._logged_once:
            logger.debug(
                "Filtered duplicate request: %s - no more duplicates will be shown "
                "(see DUPEFILTER_DEBUG to show all duplicates)",
                request,
                extra={"spider": spider},
            )
            self._logged_once = True
        spider.crawler.stats.inc_value("dupefilter/filtered")

    def close(self, reason: str) -> None:
        self._frontier = None
        if self._client is not None:
            self._client.close()
            self._client = None
