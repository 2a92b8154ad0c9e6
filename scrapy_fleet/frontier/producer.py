"""Pushing entries into a crawl from outside it: what ``scrapy fleet feed`` does.

An entry is a URL or scrapy-redis's JSON object (``scrapy_fleet.frontier.entries``),
made into requests by the spider's ``make_request_from_data`` when it has one (a
RedisSpider), and stored in the crawl's frontier exactly as a worker stores the links it
finds: deduplicated against everything the crawl has seen, in the request's host queue.
The producer never crawls and never registers as a worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scrapy import Request

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier import codec
from scrapy_fleet.frontier.feeder import as_requests
from scrapy_fleet.frontier.queue import PushEntry, RedisFrontier

if TYPE_CHECKING:
    from scrapy import Spider

logger = logging.getLogger(__name__)

BATCH = 1000  # entries per FLUSH call


@dataclass
class FeedReport:
    outcome: str = ""  # "running" (an existing crawl), "new", or "restarted" (it had finished)
    entries: int = 0  # non-blank lines read
    accepted: int = 0  # requests added to the frontier
    duplicates: int = 0  # requests the crawl had seen already
    bad: int = 0  # entries that could not be made into requests, or stored
    skipped: int = 0  # entries the spider made no request of
    problems: list[str] = field(default_factory=list)  # the first few bad entries, why


class CrawlProducer:
    def __init__(
        self,
        frontier: RedisFrontier,
        spider: Spider,
        config: FleetConfig,
        *,
        make_requests: Callable[[bytes], Request | Iterable[Request] | None],
        fingerprint: Callable[[Request], bytes],
        slot_of: Callable[[Request], str],
        owner: str,
        shown_problems: int = 10,
    ) -> None:
        self.frontier = frontier
        self.spider = spider
        self.config = config
        self.make_requests = make_requests
        self.fingerprint = fingerprint
        self.slot_of = slot_of
        self.owner = owner
        self.shown_problems = shown_problems

    def feed(self, entries: Iterable[bytes]) -> FeedReport:
        """Store ``entries`` (one URL or JSON object each; blank ones are ignored)."""
        report = FeedReport(outcome=self.frontier.attach(self.owner))
        for batch in _batches(entries, BATCH):
            pushes: list[PushEntry] = []
            for number, entry in batch:
                report.entries += 1
                try:
                    requests = as_requests(self.make_requests(entry))
                    if not requests:
                        report.skipped += 1
                    for request in requests:
                        blob = codec.encode(request, self.spider, self.config)
                        fp = b"" if request.dont_filter else self.fingerprint(request)
                        pushes.append((fp, self.slot_of(request), int(request.priority), blob))
                except Exception as exc:  # noqa: BLE001 - a bad entry is counted, never a crash
                    report.bad += 1
                    if len(report.problems) < self.shown_problems:
                        report.problems.append(
                            f"{number}: {type(exc).__name__}: {exc} ({entry[:80]!r})")
            self._store(pushes, report)
        return report

    def _store(self, pushes: list[PushEntry], report: FeedReport) -> None:
        if not pushes:
            return
        result = self.frontier.flush(pushes)
        if result.finished:
            # the crawl finished meanwhile (a keep-alive crawl's idle timeout): a new one
            report.outcome = self.frontier.attach(self.owner)
            result = self.frontier.flush(pushes)
        added = sum(result.pushed)
        report.accepted += added
        report.duplicates += len(pushes) - added


def _batches(entries: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    number = 0
    for entry in entries:
        if not entry.strip():
            continue
        number += 1  # counted as the report counts: blank lines are not entries
        batch.append((number, entry.strip()))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
