"""``scrapy fleet feed SPIDER [URL ...] [-f FILE|-]``: add entries to a spider's crawl.

Works for any spider of the project, running or not; a RedisSpider's own
``make_request_from_data`` makes the requests, so a line means what it means when pushed
into its ``redis_key``. Exit status: 0 when every entry was stored or was a duplicate,
1 when some were bad (the others are stored), 3 when Redis cannot be reached, 4 on
another fault.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from scrapy.crawler import Crawler
from scrapy.utils.misc import build_from_crawler, load_object

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.errors import EXIT_FATAL, EXIT_REDIS_UNAVAILABLE
from scrapy_fleet.frontier.entries import request_from_data
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.producer import CrawlProducer, FeedReport
from scrapy_fleet.frontier.queue import FrontierFault, RedisFrontier
from scrapy_fleet.frontier.scheduler import new_worker_id, slot_of
from scrapy_fleet.launcher.formatting import plural
from scrapy_fleet.redis_server import RedisUnavailable, connect, redact, resolve_url

if TYPE_CHECKING:
    from scrapy import Spider
    from scrapy.settings import Settings

EXIT_BAD_ENTRIES = 1


def entries_from(urls: Iterable[str], file: str | None) -> Iterator[bytes]:
    """The URLs given on the command line, then the lines of ``file`` (``-``: stdin)."""
    for url in urls:
        yield url.encode("utf-8")
    if file is None:
        return
    if file == "-":
        yield from sys.stdin.buffer
        return
    with open(file, "rb") as lines:
        yield from lines


def run_feed(spidercls: type[Spider], settings: Settings, config: FleetConfig,
             spider_args: dict[str, Any], entries: Iterable[bytes], out: IO[str]) -> int:
    crawler = Crawler(spidercls, settings)
    spider = spidercls.from_crawler(crawler, **spider_args)
    fingerprinter = build_from_crawler(load_object(settings["REQUEST_FINGERPRINTER_CLASS"]), crawler)
    make = getattr(spider, "make_request_from_data", None)
    if not callable(make):
        encoding = settings.get("REDIS_ENCODING") or "utf-8"
        make = lambda data: request_from_data(data, encoding)  # noqa: E731
    url = config.redis_url or "embedded"
    try:
        url = resolve_url(config.redis_url, config.data_dir)
        frontier = RedisFrontier(connect(url), CrawlKeys(config.key_prefix, spider.name),
                                 new_worker_id(), url=url, lease_timeout=config.lease_timeout,
                                 retry_timeout=config.redis_retry_timeout, **config.layout_options())
        producer = CrawlProducer(
            frontier, spider, config, make_requests=make,
            fingerprint=fingerprinter.fingerprint, slot_of=slot_of,
            owner=f"{spidercls.__module__}.{spidercls.__qualname__}",
        )
        report = producer.feed(entries)
    except RedisUnavailable as exc:
        print(f"scrapy fleet feed: {exc}", file=out)
        return EXIT_REDIS_UNAVAILABLE
    except FrontierFault as exc:
        print(f"scrapy fleet feed: {exc}", file=out)
        return EXIT_FATAL
    print(summary(spider.name, redact(url), report), file=out)
    for problem in report.problems:
        print(f"  bad entry {problem}", file=out)
    return EXIT_BAD_ENTRIES if report.bad else 0


def summary(name: str, where: str, report: FeedReport) -> str:
    into = {
        "running": f"the crawl of {name!r} on {where}",
        "new": f"a new crawl of {name!r} on {where} (run `scrapy fleet {name}` to crawl it)",
        "restarted": f"a new crawl of {name!r} on {where} (the previous one had finished; "
                     f"run `scrapy fleet {name}` to crawl it)",
    }[report.outcome]
    parts = [f"{report.accepted} accepted", plural(report.duplicates, "duplicate"),
             f"{report.bad} bad"]
    if report.skipped:
        parts.append(f"{report.skipped} made no request")
    entries = f"{report.entries} entr{'y' if report.entries == 1 else 'ies'}"
    return f"Fed {entries} into {into}: {', '.join(parts)}"
