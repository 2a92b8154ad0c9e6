"""robots.txt once per host for the whole fleet, and its Crawl-delay for every worker.

Scrapy's RobotsTxtMiddleware fetches robots.txt once per host *per process*. This
subclass keeps what it fetched in Redis (HASH ``robots``: netloc -> a header line + the
groups that apply to this crawl's user agents, see :mod:`.robotstxt`), so each host's
robots.txt is downloaded once for the whole crawl:

1. a worker that needs a host's rules first looks in the local cache, then in Redis;
2. if nobody has them yet, it takes a lock (``robotslock:<netloc>``, SET NX PX
   FLEET_ROBOTS_TIMEOUT, renewed while the fetch lasts) and fetches; the others poll Redis
   (without blocking the reactor) until the rules appear, or the lock expires because the
   fetcher died (then one of them fetches);
3. every worker parses the stored text with ROBOTSTXT_PARSER, as Scrapy would.

A non-2xx answer or a download error counts as "no rules" (everything allowed), which is
what Scrapy does in practice. But when the fetch (after its retries) found the host
unreachable at all (its name does not resolve, the connection is refused, connecting
timed out, no route), the entry says so (``!dns``...), and each page of that host fails
at once with the same kind of error, never retried (``fleet/politeness/unreachable_skipped``),
instead of going through the same lookups and timeouts again: on a top-sites list, dead
hosts are common, and each used to cost two full chains of retries. FLEET_SKIP_UNREACHABLE_HOSTS
= False tries the pages anyway, as Scrapy does. The robots.txt download itself takes a turn in the host's
download slot (see :mod:`.slots`), and so does the request that was waiting for it, so
neither arrives closer to another request of that host than the delay.

Crawl-delay (for ROBOTSTXT_USER_AGENT, or the request's User-Agent) raises the slot's
delay in Redis (``slotdelay``; the frontier's POP reads it), never below DOWNLOAD_DELAY.
A host whose Crawl-delay is above FLEET_MAX_CRAWL_DELAY is skipped: each of its requests
is dropped with IgnoreRequest (a reason in the log, ``fleet/politeness/crawl_delay_skipped``)
instead of crawling it at a pace that would never end.

With FLEET_HOST_STATE_TTL, a worker keeps a host's parsed rules in memory for at most a
quarter of the TTL (at most a minute), then reads them from Redis again. The reading
script restores the host's Crawl-delay if the pruner (:mod:`.prune`) dropped the slot's
state meanwhile, and a host whose entry was pruned too gets its robots.txt fetched again.
This also bounds each worker's memory on a broad crawl.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from protego import Protego
from scrapy import Request, signals
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import CannotResolveHostError, DownloadConnectionRefusedError, IgnoreRequest
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.asyncio import sleep
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler, load_object
from twisted.internet import error as net_error
from twisted.internet import task
from twisted.internet.defer import Deferred

from scrapy_fleet.frontier import codec
from scrapy_fleet.frontier.scheduler import new_worker_id
from scrapy_fleet.politeness import frontier_of, slot_key
from scrapy_fleet.politeness.config import PolitenessConfig
from scrapy_fleet.politeness.outage import AWAY, RedisAway, call_async, skipped, unfinished_if_away
from scrapy_fleet.politeness.prune import walk_interval
from scrapy_fleet.politeness.robotstxt import compact_robots
from scrapy_fleet.politeness.slots import RESERVE_META_KEY
from scrapy_fleet.politeness.store import PolitenessStore

if TYPE_CHECKING:
    from urllib.parse import ParseResult

    from scrapy import Spider
    from scrapy.crawler import Crawler
    from scrapy.robotstxt import RobotParser

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.1  # while another worker fetches a host's robots.txt

# Why a host could not be reached at all: (what the entry says, the errors that say it,
# the error its pages then fail with). Timeouts after connecting are not here: a host
# that is slow for robots.txt may still serve its pages.
UNREACHABLE: tuple[tuple[str, tuple[type[Exception], ...], type[Exception]], ...] = (
    ("dns", (CannotResolveHostError, net_error.DNSLookupError), CannotResolveHostError),
    ("refused", (DownloadConnectionRefusedError, net_error.ConnectionRefusedError),
     DownloadConnectionRefusedError),
    ("connect-timeout", (net_error.TCPTimedOutError,), net_error.TCPTimedOutError),
    ("no-route", (net_error.NoRouteError,), net_error.NoRouteError),
)


class FleetRobotsTxtMiddleware(RobotsTxtMiddleware):
    """Scrapy's RobotsTxtMiddleware, its ``robot_parser()`` answered by the fleet's cache.

    Only the public surface of the parent is used: ``process_request()`` (which calls our
    ``robot_parser()``, then applies the rules as Scrapy does), ``robot_parser()`` itself
    off the fleet, and ``DOWNLOAD_PRIORITY``. The fleet's side lives in :class:`FleetRobots`,
    so no name of ours can clash with the parent's own (private) state and helpers.
    """

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)  # NotConfigured unless ROBOTSTXT_OBEY
        self.fleet = FleetRobots(crawler, self.DOWNLOAD_PRIORITY)

    async def process_request(self, request: Request, spider: Spider | None = None) -> None:
        if frontier_of(self.crawler) is None or request.meta.get("dont_obey_robotstxt"):
            await super().process_request(request)  # not on the fleet: Scrapy's own behaviour
            return
        fleet = self.fleet
        netloc = urlparse_cached(request).netloc
        fleet.expire(netloc)
        pending = not fleet.known(netloc)  # this request may wait for the rules
        with unfinished_if_away(request):
            await super().process_request(request)  # our robot_parser(), then Scrapy's check
        why = fleet.unreachable.get(netloc)
        if why is not None and fleet.config.skip_unreachable:
            self.crawler.stats.inc_value("fleet/politeness/unreachable_skipped")
            request.meta["dont_retry"] = True  # it would only fail the same way again
            error = next(exc for kind, _, exc in UNREACHABLE if kind == why)
            raise error(f"{netloc} is unreachable ({why}: its robots.txt could not be fetched); "
                        "page not tried (FLEET_SKIP_UNREACHABLE_HOSTS)")
        if netloc in fleet.skipped:
            self.crawler.stats.inc_value("fleet/politeness/crawl_delay_skipped")
            raise IgnoreRequest(
                f"{netloc} asks for Crawl-delay {fleet.skipped[netloc]:g} s, above "
                f"FLEET_MAX_CRAWL_DELAY ({fleet.config.max_crawl_delay:g} s): host skipped"
            )
        if pending and netloc in fleet.fresh and codec.LEASE_META_KEY in request.meta:
            # leased before robots.txt was fetched: its turn in the slot is spent
            request.meta[RESERVE_META_KEY] = True

    async def robot_parser(self, request: Request) -> RobotParser | None:
        frontier = frontier_of(self.crawler)
        if frontier is None:
            return await super().robot_parser(request)
        return await self.fleet.parser(request, PolitenessStore.of(frontier))


class FleetRobots:
    """One worker's side of the fleet's robots.txt: the rules it has read (each kept at most
    a while, with FLEET_HOST_STATE_TTL), read from Redis or fetched and stored there.
    What it needs of the settings (ROBOTSTXT_PARSER, ROBOTSTXT_USER_AGENT, USER_AGENT) it
    reads itself, as Scrapy's middleware does."""

    def __init__(self, crawler: Crawler, priority: int) -> None:
        settings = crawler.settings
        self.crawler = crawler
        self.priority = priority  # of the robots.txt downloads
        self.config = PolitenessConfig.from_settings(settings)
        self.parser_class: type[RobotParser] = load_object(settings["ROBOTSTXT_PARSER"])
        self.robotstxt_useragent: str | None = settings["ROBOTSTXT_USER_AGENT"]
        self.default_useragent: str = settings["USER_AGENT"]
        self.owner = new_worker_id()  # of the robots.txt locks it takes
        # netloc -> its parser (None: allow all), or a Deferred while it is being read
        self.parsers: dict[str, RobotParser | Deferred[None] | None] = {}
        self.loaded: dict[str, float] = {}  # netloc -> time.monotonic() its rules were read
        self.skipped: dict[str, float] = {}  # netloc -> its Crawl-delay, above the cap
        self.unreachable: dict[str, str] = {}  # netloc -> why (a kind of UNREACHABLE)
        self.fresh: set[str] = set()  # netlocs whose rules this worker had to wait for
        ttl = self.config.host_state_ttl
        self.max_age = walk_interval(ttl) if ttl > 0 else None  # None: keep them for ever
        self._last_sweep = time.monotonic()

    async def parser(self, request: Request, store: PolitenessStore) -> RobotParser | None:
        """The parser of the request's host (None: allow all), as ``robot_parser()``."""
        netloc = urlparse_cached(request).netloc
        while True:
            if netloc not in self.parsers:
                return await self._read(request, store)
            parser = self.parsers[netloc]
            if not isinstance(parser, Deferred):
                return parser
            # Another request is reading them: wait for its read to end, then look again.
            # (Its Deferred fires with None: awaiting a Deferred hands its result to the
            # first waiter only, and a read cut short leaves nothing.)
            await maybe_deferred_to_future(parser)

    async def _read(self, request: Request, store: PolitenessStore) -> RobotParser | None:
        netloc = urlparse_cached(request).netloc
        waiting: Deferred[None] = Deferred()
        self.parsers[netloc] = waiting
        self.loaded[netloc] = time.monotonic()  # before the read: expires no later
        try:
            rp = await self._load(request, store)
        except BaseException:
            # RedisAway (Redis away, the worker stopping) or cancelled: nothing is known,
            # which is not "allow all". Each request waiting tries to read the rules itself
            # (after RedisAway, each stops unfinished too).
            self.parsers.pop(netloc, None)
            self.loaded.pop(netloc, None)
            raise
        else:
            self.parsers[netloc] = rp
            return rp
        finally:
            waiting.callback(None)

    async def _load(self, request: Request, store: PolitenessStore) -> RobotParser | None:
        url = urlparse_cached(request)
        try:
            body = await self._fleet_robots(request, url, store)
            if body is None:
                return None
            rp = build_from_crawler(self.parser_class, self.crawler, body)
            self._check_crawl_delay(url.netloc, body, request)
            await self.crawler.signals.send_catch_log_async(
                signal=signals.robots_parsed, robotparser=rp, request=request,
            )
            return rp
        except RedisAway:
            raise
        except Exception as exc:  # a parser failure...
            logger.error("Could not get robots.txt of %s: %s", url.netloc, exc,
                         extra={"spider": self.crawler.spider})
            return None

    # --- the fleet-wide cache -------------------------------------------------------

    async def _fleet_robots(self, request: Request, url: ParseResult, store: PolitenessStore) -> bytes | None:
        """The host's rules (None: allow all): from Redis, or fetched and stored there."""
        netloc = url.netloc
        slot = slot_key(self.crawler, request)  # robots.txt is kept in this slot's partition
        while True:
            stored = await call_async(self.crawler, lambda: store.robots_get(netloc, slot),
                                      "read robots.txt")
            if stored is not None:
                self._note_unreachable(netloc, stored)
                return _body(stored)
            ttl = self.config.robots_timeout
            if await call_async(self.crawler, lambda: store.robots_lock(netloc, self.owner, ttl, slot),
                                "lock a robots.txt fetch"):
                self.fresh.add(netloc)
                # the fetch may wait for its turn, a pause, retries: hold the lock meanwhile
                renew = task.LoopingCall(self._renew_lock, store, netloc, ttl, slot)
                renew.start(ttl / 3, now=False)
                try:
                    fetched = await self._download_robots(request, url)
                finally:
                    renew.stop()
                stored = await self._store_robots(netloc, request, fetched, store)
                if isinstance(fetched, str):
                    self.unreachable[netloc] = fetched
                return stored
            self.fresh.add(netloc)
            await sleep(POLL_INTERVAL)

    async def _store_robots(self, netloc: str, request: Request,
                            fetched: tuple[int, bytes] | str | None, store: PolitenessStore) -> bytes | None:
        """Keep what the fleet needs of a fetched robots.txt; the fetching worker also
        writes the host's Crawl-delay for the whole fleet (in the same script)."""
        slot = slot_key(self.crawler, request)
        if fetched is None or isinstance(fetched, str):
            why = fetched
            await call_async(self.crawler, lambda: store.robots_put(netloc, slot, None, unreachable=why),
                             "store robots.txt")
            return None
        status, raw = fetched
        kept = compact_robots(raw, self._agents(request), self.config.robots_max_bytes)
        if kept.truncated:
            self.crawler.stats.inc_value("fleet/politeness/robots_truncated")
            logger.warning(
                "robots.txt of %s is too long (%d bytes, %d kept of the groups for this crawl; "
                "FLEET_ROBOTS_MAX_BYTES %d): rules after the cut are ignored",
                netloc, len(raw), len(kept.body), self.config.robots_max_bytes,
            )
        delay = self._crawl_delay(kept.body, request)
        too_slow = delay is not None and delay > self.config.max_crawl_delay
        if delay is not None:
            self.crawler.stats.inc_value("fleet/politeness/crawl_delay_hosts")
            if too_slow:
                self.crawler.stats.inc_value("fleet/politeness/crawl_delay_skipped_hosts")
                logger.warning(
                    "%s asks for Crawl-delay %g s, above FLEET_MAX_CRAWL_DELAY (%g s): skipping it",
                    netloc, delay, self.config.max_crawl_delay,
                )
            else:
                logger.info("%s asks for Crawl-delay %g s: every worker honours it", netloc, delay)
        # awaited, never dropped: this write applies the host's Crawl-delay for the fleet
        # (and releases the lock), so no request of the host goes before it holds
        await call_async(
            self.crawler,
            lambda: store.robots_put(netloc, slot, kept.body, status=status, crawl_delay=delay,
                                     skipped=too_slow, truncated=kept.truncated),
            "store robots.txt",
        )
        return kept.body

    def _agents(self, request: Request) -> list[str]:
        """The user agents this crawl asks robots.txt about (as Scrapy's check does)."""
        if self.robotstxt_useragent:
            return [self.robotstxt_useragent]
        agents = [self.default_useragent]
        header = request.headers.get(b"User-Agent")
        if header:
            agents.append(header.decode("latin-1"))
        return agents

    # --- rules kept in memory -------------------------------------------------------

    def known(self, netloc: str) -> bool:
        """Whether the rules are here already (a request need not wait for them)."""
        return netloc in self.parsers and not isinstance(self.parsers[netloc], Deferred)

    def expire(self, netloc: str) -> None:
        """Forget rules read over the max age ago: this netloc's, and now and then all."""
        if self.max_age is None:
            return
        now = time.monotonic()
        if now - self._last_sweep > self.max_age:
            self._last_sweep = now
            for old in [n for n, at in self.loaded.items() if now - at > self.max_age]:
                self._forget(old)
        elif netloc in self.loaded and now - self.loaded[netloc] > self.max_age:
            self._forget(netloc)

    def _forget(self, netloc: str) -> None:
        if isinstance(self.parsers.get(netloc), Deferred):
            return  # being read right now
        self.parsers.pop(netloc, None)
        self.loaded.pop(netloc, None)
        self.skipped.pop(netloc, None)
        self.unreachable.pop(netloc, None)
        self.fresh.discard(netloc)
        self.crawler.stats.inc_value("fleet/politeness/robots_reread")

    def _renew_lock(self, store: PolitenessStore, netloc: str, ttl: float, slot: str) -> None:
        # a LoopingCall on the reactor: while Redis is away it skips a turn (two of three
        # may go before the lock lapses; at worst another worker fetches robots.txt too)
        try:
            store.robots_lock_renew(netloc, ttl, slot)
        except AWAY as exc:
            skipped(self.crawler.stats, "robots lock renewal", exc)
        except Exception as exc:  # a LoopingCall that raises stops for good
            logger.debug("could not renew the robots.txt lock of %s: %s", netloc, exc)

    def _note_unreachable(self, netloc: str, stored: bytes) -> None:
        why = _unreachable(stored)
        if why is not None:
            self.unreachable[netloc] = why

    async def _download_robots(self, request: Request, url: ParseResult) -> tuple[int, bytes] | str | None:
        """(status, body) of a 2xx answer; the kind of UNREACHABLE when the host could not
        be reached at all; None ("no rules") for anything else."""
        meta: dict = {"dont_obey_robotstxt": True}
        if request.meta.get("download_slot"):
            meta["download_slot"] = request.meta["download_slot"]
        robotsreq = Request(
            f"{url.scheme}://{url.netloc}/robots.txt", priority=self.priority,
            meta=meta, callback=NO_CALLBACK,
        )
        self.crawler.stats.inc_value("robotstxt/request_count")
        try:
            response = await self.crawler.engine.download_async(robotsreq)
        except RedisAway:
            raise  # no turn could be had: nothing was fetched, so no "no rules" either
        except Exception as exc:
            if not isinstance(exc, IgnoreRequest):
                logger.error("Error downloading %s: %s", robotsreq, exc,
                             extra={"spider": self.crawler.spider})
                self.crawler.stats.inc_value(f"robotstxt/exception_count/{type(exc)}")
            return next((kind for kind, errors, _ in UNREACHABLE if isinstance(exc, errors)), None)
        self.crawler.stats.inc_value("robotstxt/response_count")
        self.crawler.stats.inc_value(f"robotstxt/response_status_count/{response.status}")
        if not 200 <= response.status < 300:
            return None
        return response.status, response.body

    # --- Crawl-delay ----------------------------------------------------------------

    def _crawl_delay(self, body: bytes, request: Request) -> float | None:
        useragent = self.robotstxt_useragent or request.headers.get(b"User-Agent", self.default_useragent)
        if isinstance(useragent, bytes):
            useragent = useragent.decode("utf-8", "replace")
        try:
            delay = Protego.parse(body.decode("utf-8", "replace")).crawl_delay(useragent or "*")
        except Exception:  # a robots.txt Protego cannot read has no Crawl-delay for us
            return None
        return None if delay is None else max(0.0, float(delay))

    def _check_crawl_delay(self, netloc: str, body: bytes, request: Request) -> None:
        """Every worker decides for itself whether a host is skipped (same text, same rule)."""
        delay = self._crawl_delay(body, request)
        if delay is not None and delay > self.config.max_crawl_delay:
            self.skipped[netloc] = delay


def _body(stored: bytes) -> bytes | None:
    """The robots.txt rules of a stored entry; None for "no rules"."""
    header, _, body = stored.partition(b"\n")
    status = header.split(b" ", 1)[0]
    return None if status == b"-" or status.startswith(b"!") else body


def _unreachable(stored: bytes) -> str | None:
    """Why the host of a stored entry could not be reached (None: it could)."""
    status = stored.split(b" ", 1)[0].split(b"\n", 1)[0]
    if not status.startswith(b"!"):
        return None
    why = status[1:].decode("ascii", "replace")
    return why if any(kind == why for kind, _, _ in UNREACHABLE) else None
