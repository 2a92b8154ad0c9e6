"""Feeding a RedisSpider's start keys into the frontier, at least once.

The scheduler calls :meth:`StartKeyFeeder.feed` when the crawl runs low on queued work.
A feed takes one batch from the first start key that has entries, makes requests of its
entries (the spider's ``make_request_from_data``) and enqueues them like any request.
The batch is acknowledged only after the scheduler's next successful flush has stored
those requests (:meth:`stored`); the acknowledgement rides with the next take. Until
then the batch sits in the start key's ``feeding`` HASH, from which any worker puts it
back into the key once its lease runs out (``scrapy_fleet.frontier.startkey``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from scrapy import Request

from scrapy_fleet.frontier.startkey import KINDS, Batch, StartKey

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

_BAD_LOGGED = 5  # bad entries logged at WARNING; the rest are only counted
_WRONG_TYPE_EVERY = 60.0  # s between two errors about a start key of the wrong type


class StartKeyFeeder:
    def __init__(
        self,
        sources: Sequence[StartKey],
        make_requests: Callable[[bytes], Request | Iterable[Request] | None],
        enqueue: Callable[[Request], None],
        stats: StatsCollector,
        *,
        batch_size: int,
        expected_kind: str = "list",
    ) -> None:
        self.sources = list(sources)
        self.make_requests = make_requests
        self.enqueue = enqueue
        self.stats = stats
        self.batch_size = batch_size
        self.expected_kind = expected_kind  # what REDIS_START_URLS_AS_SET/_AS_ZSET say
        self._unflushed: list[Batch] = []  # requests enqueued, not yet stored in Redis
        self._unflushed_bad = 0  # bad entries of those batches: counted in Redis with them
        self._bad_in_batch = 0
        self._to_ack: dict[str, list[str]] = {}  # start key -> batches stored
        self._bad_logged = 0
        self._warned: dict[str, float] = {}

    def feed(self, *, wait: bool = False) -> int:
        """Take one batch (from the first start key that has entries) and enqueue its
        requests; returns how many entries were taken (0: every key is empty)."""
        for source in self.sources:
            acks = self._to_ack.pop(source.key, [])
            try:
                result = source.take(self.batch_size, acks, wait=wait)
            except BaseException:
                self._to_ack.setdefault(source.key, [])[:0] = acks
                raise
            if result.returned:
                self.stats.inc_value("fleet/feed/returned", result.returned)
                logger.warning("%d start entries taken by a worker that never stored them "
                               "are back in %r", result.returned, source.key)
            if result.junk:
                self.stats.inc_value("fleet/feed/junk", result.junk)
                logger.warning("Dropped %d unreadable batches from %r (not written by the "
                               "fleet)", result.junk, source.feeding_key)
            if result.oversize:
                self.stats.inc_value("fleet/feed/bad", result.oversize)
                logger.warning("Dropped %d entries of %r larger than FLEET_MAX_REQUEST_BYTES "
                               "(%d bytes)", result.oversize, source.key, source.max_entry_bytes)
            self._check_kind(source.key, result.kind)
            if result.batch is not None:
                self._enqueue_batch(result.batch)
                return len(result.batch.entries)
            if result.oversize:
                return result.oversize  # taken and dropped: the key may hold more
        return 0

    def _enqueue_batch(self, batch: Batch) -> None:
        self.stats.inc_value("fleet/feed/entries", len(batch.entries))
        self._bad_in_batch = 0
        made = 0
        for entry in batch.entries:
            try:
                requests = as_requests(self.make_requests(entry))
            except Exception as exc:  # noqa: BLE001 - a bad entry is counted, never a crash
                self._bad(batch.key, entry, exc)
                continue
            if not requests:
                self.stats.inc_value("fleet/feed/skipped")  # the spider chose to make none
                continue
            for request in requests:
                try:
                    self.enqueue(request)
                except Exception as exc:  # noqa: BLE001 - e.g. it cannot be stored
                    self._bad(batch.key, entry, exc)
                else:
                    made += 1
        self.stats.inc_value("fleet/feed/requests", made)
        # only now: a flush that happened mid-batch did not carry all of its requests
        self._unflushed.append(batch)
        self._unflushed_bad += self._bad_in_batch

    def _bad(self, key: str, entry: bytes, exc: Exception) -> None:
        self.stats.inc_value("fleet/feed/bad")
        self._bad_in_batch += 1
        if self._bad_logged < _BAD_LOGGED:
            self._bad_logged += 1
            logger.warning("Skipped a bad entry from %r (%s: %s): %r", key,
                           type(exc).__name__, exc, entry[:200])

    def _check_kind(self, key: str, kind: str) -> None:
        if kind == "none" or kind == self.expected_kind:
            return
        now = time.monotonic()
        if kind in KINDS:
            if key not in self._warned:  # once: the settings name another structure
                self._warned[key] = now
                logger.warning("Start key %r is a %s although the settings say %s "
                               "(REDIS_START_URLS_AS_SET/_AS_ZSET); reading it as a %s",
                               key, kind, self.expected_kind, kind)
            return
        self.stats.inc_value("fleet/feed/wrong_type")
        if now - self._warned.get(key, -_WRONG_TYPE_EVERY) >= _WRONG_TYPE_EVERY:
            self._warned[key] = now
            logger.error("Start key %r is a Redis %s, not a list, set or sorted set: nothing "
                         "is read from it (push start URLs with LPUSH, SADD or ZADD)", key, kind)

    # --- what the scheduler's flush tells us ----------------------------------------

    def unflushed(self) -> tuple[list[Batch], int]:
        """The batches whose requests are all in the push buffer, and how many of their
        entries were bad: stored (and counted) by the flush about to be sent. Hand them to
        :meth:`stored`, or back to :meth:`restore`."""
        batches, bad = self._unflushed, self._unflushed_bad
        self._unflushed, self._unflushed_bad = [], 0
        return batches, bad

    def holds_batches(self) -> bool:
        """Whether batches wait for a flush (one of only bad entries has no push)."""
        return bool(self._unflushed)

    def restore(self, batches: list[Batch], bad: int) -> None:
        self._unflushed[:0] = batches
        self._unflushed_bad += bad

    def stored(self, batches: list[Batch]) -> None:
        for batch in batches:
            self._to_ack.setdefault(batch.key, []).append(batch.field)

    def give_back(self, batches: list[Batch], *, wait: bool = False) -> None:
        """The crawl ended before these batches were stored: back into their keys."""
        for source in self.sources:
            fields = [b.field for b in batches if b.key == source.key]
            if fields:
                source.give_back(fields, wait=wait)

    def ack_stored(self, *, wait: bool = False) -> None:
        """Acknowledge the batches stored since (the scheduler's tick): a stored batch
        left for the next TAKE would go back into its key once its lease ran out while
        this worker was busy with it, and be fed twice (its bad entries counted twice,
        its dont_filter requests run twice). Kept for the next try if Redis is away."""
        for source in self.sources:
            fields = self._to_ack.pop(source.key, [])
            try:
                source.ack(fields, wait=wait)
            except BaseException:
                self._to_ack.setdefault(source.key, [])[:0] = fields
                raise

    def close(self, *, wait: bool = True) -> None:
        """Acknowledge what was stored. Batches never stored stay in ``feeding`` and go
        back into their keys when their lease runs out."""
        self.ack_stored(wait=wait)


def as_requests(made: Any) -> list[Request]:
    if made is None:
        return []
    if isinstance(made, Request):
        return [made]
    if isinstance(made, (str, bytes, dict)) or not isinstance(made, Iterable):
        raise TypeError(f"make_request_from_data returned {type(made).__name__}, not requests")
    requests = list(made)
    for request in requests:
        if not isinstance(request, Request):
            raise TypeError(f"make_request_from_data gave a {type(request).__name__}, "
                            "not a Request")
    return requests
