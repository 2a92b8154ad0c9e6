"""FleetScheduler: Scrapy's scheduler interface over the shared Redis frontier.

Life of a request in a worker:

1. ``enqueue_request`` encodes it (failing here, in the process that made it, if it cannot
   be stored) and buffers it; buffered pushes go to Redis in one script call.
2. ``next_request`` leases a batch from Redis (one round trip that also carries the
   buffered pushes and acks) and hands them to the engine one by one.
3. When the engine has finished with a request (its callback or errback output handed on,
   or the redirect/retry that replaced it enqueued), the request is acknowledged.
4. A worker that dies keeps its leases only until its heartbeat is stale; then any live
   worker puts them back in the queue. A worker that stops cleanly hands them back.

The crawl is finished when nothing is pending, nothing is leased, no live worker is still
feeding start requests, and they have been fed at least once: only then does
``has_pending_requests`` say no, and the engine closes the spider as "finished".
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.core.scheduler import BaseScheduler
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler, load_object
from twisted.internet import task
from twisted.python.failure import Failure

from scrapy_fleet import scrapy_internals
from scrapy_fleet.config import FleetConfig
from scrapy_fleet.errors import (
    EXIT_FATAL,
    EXIT_REDIS_UNAVAILABLE,
    FatalItemError,
    record_exit_status,
)
from scrapy_fleet.frontier import codec
from scrapy_fleet.frontier.dupefilter import FleetDupeFilter
from scrapy_fleet.frontier.feeder import StartKeyFeeder
from scrapy_fleet.frontier.seencache import SeenCache
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.observe.worker import REPORT_INTERVAL, Report, WorkerReport
from scrapy_fleet.frontier.startkey import StartKey
from scrapy_fleet.frontier.queue import (
    CrawlLost,
    FlushResult,
    FrontierFault,
    PushEntry,
    RedisFrontier,
    RedisOutOfMemory,
    RedisRetryLater,
)
from scrapy_fleet.redis_server import (
    RedisUnavailable,
    connect,
    ensure_embedded_server,
    redact,
    resolve_url,
)

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector
    from typing_extensions import Self

logger = logging.getLogger(__name__)

_SCHEDULERS: weakref.WeakKeyDictionary[Any, FleetScheduler] = weakref.WeakKeyDictionary()
_PUSH_BUFFER_LIMIT = 64  # buffered pushes that force a flush from enqueue_request
_INVALID_LOGGED = 5  # invalid queue entries logged at WARNING; the rest are only counted



def slot_of(request: Request, crawler: Crawler | None = None) -> str:
    """The request's download slot: its queue in Redis and the unit of politeness, keyed
    as the crawl's downloader keys it (``Downloader.get_slot_key``: meta download_slot,
    else the host name, or its IP address with CONCURRENT_REQUESTS_PER_IP)."""
    if crawler is not None:
        try:
            return str(crawler.engine.downloader.get_slot_key(request))
        except (RuntimeError, AttributeError):  # no engine yet (Scrapy 2.19 raises)
            pass
    return str(request.meta.get("download_slot") or urlparse_cached(request).hostname or "")


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class FleetScheduler(BaseScheduler):
    def __init__(
        self,
        *,
        config: FleetConfig,
        dupefilter: FleetDupeFilter,
        stats: StatsCollector,
        crawler: Crawler | None = None,
        concurrent_requests: int = 16,
    ) -> None:
        self.config = config
        self.df = dupefilter
        self.stats = stats
        self.crawler = crawler
        self.concurrent_requests = concurrent_requests
        self.worker_id = new_worker_id()
        self.frontier: RedisFrontier | None = None
        self.spider: Spider | None = None
        self.finished = False
        self.fatal: str | None = None  # why this worker stops on a fault (non-zero exit)
        self.fatal_status = EXIT_FATAL
        self._failing_since: float | None = None  # first of a run of unexpected errors
        self._fault: BaseException | None = None  # the exception behind ``fatal``, if any
        self._not_stored: set[str] = set()  # leases whose items could not be stored
        self._buffer: deque[tuple[str, bytes | None]] = deque()  # leased, not yet handed out
        self._held: set[str] = set()  # lease ids handed to the engine, not yet finished
        self._pushes: list[PushEntry] = []
        self._push_requests: list[Request] = []
        self._acks: list[str] = []
        self._invalid: list[str] = []
        self._seeding = False
        self._seed_end: str | None = None  # "complete"/"aborted": not yet told to Redis
        self._retry_at = 0.0  # Redis away: no round trip before this (monotonic)
        self._empty_until = 0.0
        self._last_beat = 0.0
        # its counters, failed requests and state, sent to the crawl while they change
        self.report = WorkerReport.for_this_process(stats, self.worker_id)
        self._last_report = 0.0
        self._tick: task.LoopingCall | None = None
        self._invalid_logged = 0
        self._wake_at: Any = None  # a pending reactor call: a delayed slot comes due
        self.feeder: StartKeyFeeder | None = None  # a RedisSpider's start keys
        self._pending: int | None = None  # requests queued crawl-wide, as of the last flush
        self._feed_after = 0.0  # the start keys were empty: no take before this (monotonic)
        self._holding_pushes = False  # a start batch is being enqueued: one flush after it
        self._seen = SeenCache(config.local_seen)  # fingerprints the crawl surely has
        self._local_duplicates = 0  # dropped by _seen, not yet added to the crawl's stats
        self._io: ThreadPoolExecutor | None = None  # the Redis thread: one flush at a time
        self._in_flight: tuple[Future[FlushResult], _FlushCall] | None = None
        self._closing = False
        self._turn_end_flush = False  # a reactor call will flush at the end of this turn

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        dupefilter = build_from_crawler(load_object(crawler.settings["DUPEFILTER_CLASS"]), crawler)
        if not isinstance(dupefilter, FleetDupeFilter):
            raise ValueError(
                "FleetScheduler needs DUPEFILTER_CLASS = "
                "'scrapy_fleet.frontier.dupefilter.FleetDupeFilter' (or a subclass)"
            )
        assert crawler.stats is not None
        scheduler = cls(
            config=FleetConfig.from_settings(crawler.settings),
            dupefilter=dupefilter,
            stats=crawler.stats,
            crawler=crawler,
            concurrent_requests=crawler.settings.getint("CONCURRENT_REQUESTS"),
        )
        _SCHEDULERS[crawler] = scheduler
        return scheduler

    @property
    def crawl_id(self) -> str | None:
        """The id of the crawl this worker joined: a fresh/new crawl gets a new one, a
        resumed crawl keeps it (the JSON-lines pipeline starts a new file on a new id)."""
        return self.frontier.crawl_id if self.frontier is not None else None

    @classmethod
    def of(cls, crawler: Crawler) -> FleetScheduler | None:
        """The fleet scheduler of a crawler, if it uses one (for the start middleware)."""
        return _SCHEDULERS.get(crawler)

    # --- opening and closing --------------------------------------------------------

    def open(self, spider: Spider) -> None:
        self.spider = spider
        config = self.config
        embedded = config.redis_url is None
        url = config.redis_url or "embedded"
        try:
            url = resolve_url(config.redis_url, config.data_dir)
            self.frontier = RedisFrontier(
                connect(url),
                CrawlKeys(config.key_prefix, spider.name),
                self.worker_id,
                url=url,
                lease_timeout=config.lease_timeout,
                download_delay=config.download_delay,
                concurrency_per_slot=config.concurrency_per_slot,
                retry_timeout=config.redis_retry_timeout,
                wait_replicas=config.wait_replicas,
                on_connection_lost=(lambda: ensure_embedded_server(config.data_dir)) if embedded else None,
                **config.layout_options(),
            )
            owner = f"{type(spider).__module__}.{type(spider).__qualname__}"
            outcome = self.frontier.open(fresh=config.fresh, restart_finished=config.seed,
                                         owner=owner, keep_alive=config.keep_alive,
                                         idle_timeout=config.idle_timeout,
                                         feeds=_feeds_from_redis(spider))
            keep_alive, idle_timeout = self.frontier.crawl_settings()
        except (RedisUnavailable, FrontierFault) as exc:
            self.fatal = str(exc)
            self.fatal_status = _exit_status(exc)
            logger.error("Cannot open the fleet frontier: %s", exc)
            raise SystemExit(f"scrapy-fleet: {exc}") from None
        for warning in self.frontier.durability_warnings():
            logger.warning("%s", warning)
        logger.info(
            "Fleet frontier for %r on %s, worker %s: %s crawl",
            spider.name, redact(url), self.worker_id, outcome,
        )
        self.stats.set_value("fleet/worker", self.worker_id)
        if keep_alive:
            logger.info(
                "The crawl is keep-alive: it ends on Ctrl-C/SIGTERM%s, never when its queue "
                "is empty", f" or after {idle_timeout:g} s idle" if idle_timeout else "",
            )
        self.feeder = self._start_key_feeder(spider)
        if outcome == "finished":
            self.finished = True  # nothing to do: the engine closes us as "finished"
        self._install_finish_hook()
        if self.crawler is not None:
            self.crawler.signals.connect(self._item_error, signal=signals.item_error)
            self.crawler.signals.connect(self._spider_error, signal=signals.spider_error)
        self._tick = task.LoopingCall(self._on_tick)
        # _on_tick never raises; should the loop stop anyway, say so loudly
        self._tick.start(config.poll_interval, now=False).addErrback(
            lambda f: self._fail(f"the fleet scheduler's tick stopped: {f.getErrorMessage()}")
        )

    def _start_key_feeder(self, spider: Spider) -> StartKeyFeeder | None:
        if not _feeds_from_redis(spider) or self.frontier is None:
            return None
        frontier, settings = self.frontier, spider.settings
        sources = [
            StartKey(frontier.client, key, frontier.keys.feeding(key), self.worker_id,
                     lease_timeout=self.config.lease_timeout,
                     max_entry_bytes=self.config.max_request_bytes, call=frontier.call)
            for key in spider.redis_keys()
        ]
        kind = ("set" if settings.getbool("REDIS_START_URLS_AS_SET") else
                "zset" if settings.getbool("REDIS_START_URLS_AS_ZSET") else "list")
        feeder = StartKeyFeeder(sources, spider.make_request_from_data, self.feed, self.stats,
                                batch_size=spider.feed_batch_size(), expected_kind=kind)
        logger.info("Reading start requests from Redis %s %s (batches of %d)",
                    kind, ", ".join(repr(s.key) for s in sources), feeder.batch_size)
        return feeder

    def _record_seen_set(self) -> None:
        """The crawl's seen-set in this worker's stats: its size, and a Bloom filter's fill
        and estimated false-positive rate (the share of new URLs it drops wrongly)."""
        seen = self.frontier.seen_status()
        self.stats.set_value("fleet/seen/mode", seen["mode"])
        self.stats.set_value("fleet/seen/count", seen["count"])
        bloom = seen.get("bloom")
        if bloom:
            self.stats.set_value("fleet/seen/bloom_layers", bloom["layers"])
            self.stats.set_value("fleet/seen/bloom_fill", round(bloom["fill"], 4))
            self.stats.set_value("fleet/seen/bloom_fp_rate", float(f"{bloom['fp_rate']:.3g}"))
            if bloom["fp_rate"] > self.config.bloom_error_rate:
                logger.warning(
                    "The crawl's Bloom seen-set estimates a false-positive rate of %.2g, above "
                    "FLEET_BLOOM_ERROR_RATE %.2g (%d layers; it was made with other settings, "
                    "or reached its largest size): that share of new URLs is dropped as "
                    "duplicates", bloom["fp_rate"], self.config.bloom_error_rate, bloom["layers"])

    def close(self, reason: str) -> None:
        if self._tick is not None and self._tick.running:
            self._tick.stop()
        if self._wake_at is not None and self._wake_at.active():
            self._wake_at.cancel()
        if self.fatal is not None:
            # Scrapy's exit status ignores how a spider closed; a fault must not exit 0
            record_exit_status(self.fatal_status)
            logger.error("scrapy-fleet: this worker stopped: %s", self.fatal)
        if self.frontier is None:
            return
        self._closing = True  # no more round trips but the last flush and the hand-back
        self._wait_in_flight()
        if self.fatal_status == EXIT_REDIS_UNAVAILABLE or isinstance(self._fault, CrawlLost):
            logger.error(
                "Requests held by worker %s return to the queue %.0f s after its last "
                "heartbeat once Redis is back", self.worker_id, self.config.lease_timeout,
            )
            return
        try:
            if not isinstance(self._fault, RedisOutOfMemory):
                # what is done is acknowledged; out of memory, the same script would only
                # fail again: those requests go back to the queue instead and run again
                self._flush(wait=True)
                self.report.set_state("stopped" if self.fatal else "closed",
                                      self.fatal or reason)
                self._send_report(wait=True)
                if self.feeder is not None:
                    self.feeder.close()
            handed_back = self.frontier.leave()
            self._record_seen_set()
            self.frontier.record_outcome({
                "reason": reason,
                "pages": int(self.stats.get_value("response_received_count", 0)),
                "items": int(self.stats.get_value("item_scraped_count", 0)),
                "error": self.fatal,
                "exit_status": self.fatal_status if self.fatal is not None else 0,
                "pid": os.getpid(),
            })
        except (RedisUnavailable, FrontierFault) as exc:
            logger.error(
                "Could not hand back leased requests (%s); they return to the queue "
                "%.0f s after this worker's last heartbeat", exc, self.config.lease_timeout,
            )
            return
        finally:
            self.frontier.client.close()
        if handed_back:
            logger.info("Handed %d unfinished requests back to the frontier", handed_back)
            self.stats.inc_value("fleet/requeued", handed_back)
        logger.info("Fleet worker %s closed (%s)", self.worker_id, reason)

    # --- the scheduler interface ----------------------------------------------------

    def has_pending_requests(self) -> bool:
        # Until the whole crawl is finished, this worker may still get work: another
        # worker can add links at any moment, or die and leave its leases to us.
        return bool(self._buffer or self._pushes) or not self.finished

    def enqueue_request(self, request: Request) -> bool:
        fingerprint = b"" if request.dont_filter else self.df.fingerprint(request)
        if fingerprint and fingerprint in self._seen:
            # a sure duplicate: dropped here, as Scrapy's scheduler drops what its
            # dupefilter has seen (False: the engine sends request_dropped)
            self._local_duplicates += 1
            self.stats.inc_value("fleet/duplicate")
            self.stats.inc_value("fleet/duplicate_local")
            self.df.log(request, self.spider)
            return False
        blob = codec.encode(request, self.spider, self.config)  # raises here, in the producing process
        self._pushes.append((fingerprint, slot_of(request, self.crawler), int(request.priority), blob))
        self._push_requests.append(request)
        if len(self._pushes) >= _PUSH_BUFFER_LIMIT and not self._holding_pushes:
            self._flush_soon()
        elif not self._holding_pushes:
            # new links leave at the end of this reactor turn, not at the next tick: a
            # crawl whose queue is short (a deep site, its first pages) waits on them
            self._flush_at_turn_end()
        return True

    def _flush_at_turn_end(self) -> None:
        """Flush (and lease, if the buffer is low) once this reactor turn is over. Round
        trips stay few: all that a turn buffers leaves together, and while one round
        trip is under way the next one's load gathers."""
        if self._turn_end_flush or not _reactor_running():
            return
        from twisted.internet import reactor

        self._turn_end_flush = True
        reactor.callLater(0, self._turn_ended)

    def _turn_ended(self) -> None:
        self._turn_end_flush = False
        if (self._pushes or self._acks) and not self.finished:
            # acks too leave now: until they land, their requests count against their
            # host's fleet-wide cap, for every worker
            self._prefetch(force=True)

    def next_request(self) -> Request | None:
        # An empty pop is not retried before the next tick, unless we have new links of
        # our own to push (they go in the same round trip as the pop).
        if not self.finished and (not self._buffer or self._in_flight is None):
            self._prefetch()
        while self._buffer:
            lease, blob = self._buffer.popleft()
            try:
                request = codec.decode(blob, self.spider, self.config)
            except codec.InvalidEntry as exc:
                self._reject(lease, blob, exc)
                continue
            request.meta[codec.LEASE_META_KEY] = lease
            self._held.add(lease)
            return request
        return None

    # --- Redis round trips ----------------------------------------------------------

    def _free_slots(self) -> int:
        """Requests to lease now: free download slots, less those leased and waiting here."""
        free = self.concurrent_requests - len(self._buffer)
        if self.crawler is not None and self.crawler.engine is not None:
            free -= len(self.crawler.engine.downloader.active)
        return min(self.config.batch_size, free)

    def _took(self, result: FlushResult, pop: int) -> None:
        """Book what a flush with a pop leased."""
        if not pop:
            return
        for member in result.junk:  # dropped (and counted in Redis) by the pop script
            self._count_invalid(member, None, "not an id this frontier issued")
        if result.popped:
            self._buffer.extend(result.popped)
            self.stats.inc_value("fleet/leased", len(result.popped))
            self._wake_engine()
        elif not self._buffer:
            # Politeness: when a slot held back by its delay comes due before the next
            # tick, pop right then (else a 0.25 s delay would be served as 0.4 s).
            wait = self.config.poll_interval
            if result.next_due is not None and result.next_due < wait:
                wait = max(0.002, result.next_due)
                self._wake_later(wait)
            self._empty_until = time.monotonic() + wait

    def _maybe_feed(self) -> None:
        """Take a batch from the start keys when the crawl runs low on queued work (the
        requests go out with the next flush), but not more often than every tick while
        the keys are empty."""
        if self.feeder is None or self.finished or self.fatal is not None:
            return
        if self._in_flight is not None:
            # a flush under way may carry a batch taken before: a TAKE now would not yet
            # acknowledge it, and a worker killed meanwhile would get it fed (and its bad
            # entries counted) twice
            return
        now = time.monotonic()
        low = max(self.concurrent_requests, self.feeder.batch_size)
        if now < self._feed_after or (self._pending is not None and self._pending >= low):
            return
        if not self._feed_batch():
            self._feed_after = now + self.config.poll_interval

    def _feed_batch(self) -> int:
        """One batch from the start keys into the push buffer; entries taken."""
        assert self.feeder is not None
        # a batch is enqueued in one go: its pushes leave in one flush, not one per 64
        self._holding_pushes = True
        try:
            return self.feeder.feed()
        finally:
            self._holding_pushes = False

    def _wake_later(self, seconds: float) -> None:
        from twisted.internet import reactor

        if self._wake_at is not None and self._wake_at.active():
            if self._wake_at.getTime() <= reactor.seconds() + seconds:
                return
            self._wake_at.cancel()
        self._wake_at = reactor.callLater(seconds, self._wake_engine)

    def _flush(self, pop: int = 0, *, wait: bool = False) -> FlushResult:
        """One round trip, on this thread; on the reactor thread (``wait`` off) it never
        sleeps: while Redis is away it raises RedisRetryLater and the buffers are kept
        for next time."""
        call = self._take_buffers(pop, wait)
        try:
            result = call.run()
        except BaseException:
            self._restore(call)
            raise
        return self._stored(call, result)

    def _take_buffers(self, pop: int, wait: bool) -> _FlushCall:
        """What the next flush sends: every buffered push and ack, leaving the buffers empty."""
        assert self.frontier is not None
        batches, bad = self.feeder.unflushed() if self.feeder is not None else ([], 0)
        # acks carry this worker's report, sent first in their round trip: a request
        # acknowledged is counted (pages, items, errors) even if the worker dies next.
        # Not in a split crawl, whose reports go by the tick (RedisFrontier.flush)
        report = (self.report.pending() if self._acks and self.frontier.split is None
                  else None)
        call = _FlushCall(self.frontier, self._pushes, self._push_requests, self._acks,
                          self._invalid, batches, bad, self._local_duplicates, pop,
                          self._held | {i for i, _ in self._buffer}, wait, report)
        self._pushes, self._push_requests, self._acks, self._invalid = [], [], [], []
        self._local_duplicates = 0
        return call

    def _restore(self, call: _FlushCall) -> None:
        """A flush failed: keep all it carried for the next one (or for the lease timeout
        to recover)."""
        self._pushes, self._push_requests = call.pushes + self._pushes, call.requests + self._push_requests
        self._acks, self._invalid = call.acks + self._acks, call.invalid + self._invalid
        if self.feeder is not None:
            self.feeder.restore(call.batches, call.bad)
        self._local_duplicates += call.duplicates

    def _stored(self, call: _FlushCall, result: FlushResult) -> FlushResult:
        """Book a flush's result: stats, the local seen-cache, the start batches it stored."""
        pushes, batches = call.pushes, call.batches
        if call.report is not None and result.reported:
            self.report.sent(call.report)
        if result.finished:
            # the crawl ended (a keep-alive crawl's idle timeout) before these were stored
            logger.info("The crawl has finished; %d requests not stored were dropped", len(pushes))
            self.finished = True
            if self.feeder is not None and batches:
                self.feeder.give_back(batches, wait=call.wait)
            return result
        if self.feeder is not None:
            self.feeder.stored(batches)
        self._pending = result.pending
        if pushes:
            self._seen.add(fp for fp, _, _, _ in pushes)  # stored now, or stored before
            added = sum(result.pushed)
            self.stats.inc_value("fleet/enqueued", added)
            if added < len(pushes):
                self.stats.inc_value("fleet/duplicate", len(pushes) - added)
                for request, ok in zip(call.requests, result.pushed):
                    if not ok:
                        self.df.log(request, self.spider)
        if call.acks:
            self.stats.inc_value("fleet/acked", len(call.acks))
        return result

    # --- round trips off the reactor thread -------------------------------------------

    def _flush_soon(self, pop: int = 0) -> None:
        """Start a flush on the Redis thread, unless one is under way (its buffers then
        wait for the next). The reactor never waits for Redis: the result comes back to
        it through ``_flush_done``. Without a running reactor (tools, benches), the flush
        runs here and now."""
        if self._in_flight is not None or self.fatal is not None or self._closing:
            return
        if not _reactor_running():
            self._guarded(lambda: self._took(self._flush(pop), pop))
            return
        if time.monotonic() < self._retry_at:
            return  # Redis is away: the next attempt is due later (the tick comes back)
        from twisted.internet import reactor

        call = self._take_buffers(pop, wait=False)
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-redis")
        future = self._io.submit(call.run)
        self._in_flight = (future, call)
        future.add_done_callback(lambda f: reactor.callFromThread(self._flush_done, f))

    def _flush_done(self, future: Future[FlushResult]) -> None:
        """Back on the reactor thread: book the flush that ``future`` ran."""
        if self._in_flight is None or self._in_flight[0] is not future:
            return  # close() has booked it already
        call = self._in_flight[1]
        self._in_flight = None

        def book() -> None:
            try:
                result = future.result()
            except BaseException:
                self._restore(call)
                raise
            self._took(self._stored(call, result), call.pop)

        self._guarded(book, gate=False)
        if not self.finished and self.fatal is None:
            # pushes and acks gathered meanwhile leave now
            self._prefetch(force=bool(self._pushes or self._acks))

    def _wait_in_flight(self) -> None:
        """Shutting down: wait for the flush under way, then book it here."""
        if self._in_flight is not None:
            future = self._in_flight[0]
            try:
                future.result(timeout=self.config.redis_retry_timeout + 30)
            except BaseException:  # noqa: BLE001 - booked (and reported) just below
                pass
            self._flush_done(future)
        if self._io is not None:
            self._io.shutdown(wait=False)
            self._io = None

    def _prefetch(self, *, force: bool = False) -> None:
        """Lease the next batch while the buffer still holds some: by the time the engine
        asks, it is there (a round trip hidden behind the downloads). ``force``: flush
        the buffered pushes even if no lease is due (leasing too, if there is room)."""
        # (without a reactor each round trip blocks anyway: only when the buffer is empty)
        low = self.config.batch_size // 2 if _reactor_running() else 0
        if len(self._buffer) > low:
            if force:
                self._flush_soon()
            return
        if not self._buffer and not self._pushes and time.monotonic() < self._empty_until:
            return  # the last pop found nothing: not again before the next tick
        pop = self._free_slots()
        if not self._buffer:
            pop = max(1, pop)
        if pop > 0 or self._pushes:
            self._maybe_feed()
            self._flush_soon(pop=max(0, pop))

    def _reject(self, lease: str, blob: bytes | None, exc: Exception) -> None:
        self._invalid.append(lease)
        self._count_invalid(lease, blob, str(exc))

    def _count_invalid(self, lease: str, blob: bytes | None, why: str) -> None:
        self.stats.inc_value("fleet/invalid")
        if self._invalid_logged < _INVALID_LOGGED:
            self._invalid_logged += 1
            logger.warning(
                "Dropped invalid queue entry %s (%s; %d bytes, starts %r); it was not run",
                lease, why, len(blob or b""), (blob or b"")[:16],
            )

    # --- the end of a request -------------------------------------------------------

    def _install_finish_hook(self) -> None:
        """Acknowledge a request once the engine is done with it: its callback/errback
        output handed on (requests enqueued, items through the pipelines), or the
        redirect/retry that replaced it enqueued. Scrapy has no public hook for this
        moment (see scrapy_fleet.scrapy_internals)."""
        engine = self.crawler.engine if self.crawler is not None else None
        if engine is None:
            return
        scrapy_internals.wrap_downloader_output(engine, self._finished_request)

    def _finished_request(self, passthrough: Any, request: Request, result: Any) -> Any:
        lease = request.meta.get(codec.LEASE_META_KEY)
        if lease in self._held:
            self._held.discard(lease)
            self.report.request_finished(lease, slot_of(request, self.crawler), result,
                                         self.spider, self.crawler and self.crawler.settings)
            if lease in self._not_stored:
                # its items never reached the output: keep it leased, so it is handed
                # back (on close) or reclaimed, and the next run makes them again
                self._not_stored.discard(lease)
            else:
                self._acks.append(lease)
                # its slot has room again (a host at its cap found nothing to lease):
                # lease now, not at the next tick
                self._empty_until = 0.0
                self._flush_at_turn_end()
        return passthrough

    def _spider_error(self, failure: Failure, response: Any, spider: Any) -> None:
        """A callback or errback raised: its request failed (counted once, when it ends)."""
        request = getattr(response, "request", None)
        if request is not None:
            self.report.callback_failed(request.meta.get(codec.LEASE_META_KEY), failure.value)

    def _item_error(self, item: Any, response: Any, spider: Any, failure: Failure) -> None:
        """A pipeline could not store an item: that request must not be acknowledged."""
        if not isinstance(failure.value, FatalItemError):
            return  # Scrapy's usual behaviour: logged, the item is lost by the user's choice
        request = getattr(response, "request", None)
        lease = request.meta.get(codec.LEASE_META_KEY) if request is not None else None
        if lease is not None:
            self._not_stored.add(lease)
        self._fail(f"an item could not be stored: {failure.value}")

    # --- seeding (called by FleetStartMiddleware) -----------------------------------

    def feed(self, request: Request) -> None:
        """Enqueue a start request through the engine's public ``crawl()``: the
        request_scheduled signal, then ``enqueue_request`` (a buffered push, sent 64 at a
        time), then one engine turn scheduled (a no-op while one is pending)."""
        assert self.crawler is not None and self.crawler.engine is not None
        self.crawler.engine.crawl(request)

    def fail_crawl(self, error: str) -> None:
        """The crawl cannot go on for anyone (its start requests could not be made): mark
        it failed in Redis, so every worker stops with ``error``, and stop this one."""
        assert self.frontier is not None
        self._guarded(lambda: self.frontier.fail_crawl(error))
        self._fail(error)

    def begin_seeding(self) -> None:
        assert self.frontier is not None
        self._seeding = True
        self._guarded(lambda: self.frontier.set_seeding(True))

    def end_seeding(self, *, complete: bool) -> None:
        """Start requests are all in the frontier (or the feed was aborted). Sent now or,
        while Redis is away, by a later tick: the crawl cannot end without it."""
        self._seeding = False
        self._seed_end = "complete" if complete else "aborted"
        self._guarded(self._send_seed_end)

    def _send_seed_end(self) -> None:
        assert self.frontier is not None
        if self._in_flight is not None:
            return  # its pushes may be start requests: they must land first (the tick retries)
        self._flush()
        self.frontier.set_seeding(False, complete=self._seed_end == "complete", wait=False)
        self._seed_end = None

    # --- the periodic tick ----------------------------------------------------------

    def _on_tick(self) -> None:
        # never raises: a LoopingCall that raises stops for good (no heartbeat, no end)
        self._guarded(self._tick_once)

    def _tick_once(self) -> None:
        assert self.frontier is not None
        now = time.monotonic()
        if self._seed_end is not None:
            self._send_seed_end()
        if not self._buffer and not self._held:
            self._maybe_feed()  # an idle worker looks for new start entries
        if self._pushes or self._acks or self._invalid or (
                self.feeder is not None and self.feeder.holds_batches()):
            self._flush_soon()
        if self.feeder is not None:
            self.feeder.ack_stored()
        if now - self._last_beat >= self.config.heartbeat_interval:
            self.frontier.heartbeat(wait=False)
            self._last_beat = now
            for worker, count in self.frontier.reclaim(wait=False):
                logger.warning(
                    "Worker %s stopped heartbeating; %d of its requests are back in the queue",
                    worker, count,
                )
                self.stats.inc_value("fleet/reclaimed", count)
        if now - self._last_report >= REPORT_INTERVAL:
            self._send_report()
            self._last_report = now
        if self._buffer or self.finished:
            return
        if not (self._held or self._seeding or self._seed_end or self._in_flight is not None
                or self._pushes or self._acks):
            # locally idle: is the whole crawl finished?
            # a lost or failed crawl raises: _guarded stops this worker with its message
            if self.frontier.check_finished(keep_alive=self.config.keep_alive, wait=False).finished:
                self.finished = True
                self.report.set_state("finished", "the crawl is finished")
                self._send_report()
                logger.info("Crawl finished: the frontier is empty and no worker holds work")
        self._empty_until = 0.0
        self._wake_engine()

    def _send_report(self, *, wait: bool = False) -> None:
        """This worker's counters, failed requests and state to the crawl, if they changed
        (a report Redis did not answer goes again as it was, then what came after it)."""
        assert self.frontier is not None
        if not self.finished and self.fatal is None and not self._closing:
            self.report.set_state(*self._activity())
        # at most twice: a report that was not answered, then what came after it
        for _ in range(2):
            report = self.report.pending()
            if report is None:
                return
            self.frontier.add_totals(report.totals, kinds=report.kinds, hosts=report.hosts,
                                     info=report.info, seq=report.seq, wait=wait)
            self.report.sent(report)

    def _activity(self) -> tuple[str, str]:
        """What this worker does now, and why it idles if it does (the worker table)."""
        if self._seeding:
            return "seeding", "feeding the start requests"
        if self._held or self._buffer:
            held = len(self._held)
            return "crawling", f"{held} request{'' if held == 1 else 's'} in progress"
        if self._pending:
            return "idle", ("the queued requests wait for their hosts: download delay, "
                            "backoff or CONCURRENT_REQUESTS_PER_DOMAIN "
                            f"({self.config.concurrency_per_slot}) reached fleet-wide")
        if self.config.keep_alive or self.feeder is not None:
            return "idle", "waiting for new start entries"
        return "idle", "nothing queued: waiting for links from requests in flight elsewhere"

    def _wake_engine(self) -> None:
        # The engine only polls an idle scheduler every 5 s; nudge it when work may exist.
        if self.crawler is not None and self.crawler.engine is not None:
            scrapy_internals.wake_engine(self.crawler.engine)

    def _guarded(self, operation: Any, *, gate: bool = True) -> None:
        """Run a frontier operation; never raises.

        Redis gone past the deadline, out of memory past it, the crawl's data lost: the
        worker stops with that message. Any other error (a bug, junk we did not foresee)
        is logged and retried at the next call; if it persists for
        FLEET_REDIS_RETRY_TIMEOUT the worker stops with it rather than idle forever.
        """
        if gate and self.fatal is not None:
            return  # already stopping; don't wait out the deadline again on every call
        if gate and time.monotonic() < self._retry_at:
            return  # Redis is away: the next attempt is due later (the tick comes back)
        try:
            operation()
        except RedisRetryLater as later:
            self._retry_at = time.monotonic() + later.pause
        except (RedisUnavailable, FrontierFault) as exc:
            self._fail(str(exc), exc)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
                logger.exception("Fleet frontier operation failed; retrying")
            elif now - self._failing_since >= self.config.redis_retry_timeout:
                self._fail(f"the fleet frontier kept failing for "
                           f"{now - self._failing_since:.0f} s: {exc!r}", exc)
        else:
            self._failing_since = None

    def _fail(self, message: str, exc: BaseException | None = None) -> None:
        """Stop this worker on a fault: one clear error, a non-zero exit, and the
        requests it holds handed back (or reclaimed when Redis cannot be reached)."""
        if self.fatal is not None:
            return
        self.fatal = message
        self._fault = exc
        self.fatal_status = _exit_status(exc)
        logger.error("%s. Stopping this worker.", message)
        self.stats.set_value("fleet/fatal", message)
        if self.crawler is not None and self.crawler.engine is not None:
            reason = "redis_unavailable" if self.fatal_status == EXIT_REDIS_UNAVAILABLE else "fleet_error"
            deferred_from_coro(self.crawler.engine.close_spider_async(reason=reason))


def _feeds_from_redis(spider: Spider) -> bool:
    from scrapy_fleet.spiders.redis import RedisMixin  # the plugin's own base class

    return isinstance(spider, RedisMixin)


def _exit_status(exc: BaseException | None) -> int:
    return EXIT_REDIS_UNAVAILABLE if isinstance(exc, RedisUnavailable) else EXIT_FATAL


@dataclass
class _FlushCall:
    """One flush's load, taken from the scheduler's buffers on the reactor thread; ``run``
    is the round trip, which may run on the Redis thread (it touches no scheduler state)."""

    frontier: RedisFrontier
    pushes: list[PushEntry]
    requests: list[Request]
    acks: list[str]
    invalid: list[str]
    batches: list[Any]  # start-key batches these pushes store (acknowledged with them)
    bad: int
    duplicates: int
    pop: int
    held: set[str]
    wait: bool
    report: Report | None = None  # rides with the acks (WorkerReport.pending)

    def run(self) -> FlushResult:
        return self.frontier.flush(self.pushes, self.acks, self.invalid, pop=self.pop,
                                   held=self.held, wait=self.wait, feed_bad=self.bad,
                                   duplicates=self.duplicates, report=self.report)


def _reactor_running() -> bool:
    from twisted.internet import reactor

    return bool(getattr(reactor, "running", False))
