"""The politeness layer while Redis is away: never a sleep on the reactor thread (issue 9).

The middlewares reach Redis through ``PolitenessStore.of(frontier)``, which never waits:
while Redis is away (or full) a call raises :class:`RedisRetryLater` at once instead of
sleeping, which would freeze every download and the heartbeat. Each caller decides:

- a call a request cannot do without (its turn in a slot, its host's robots.txt, the
  pause after a 429, the DOWNLOAD_SLOTS delays at start-up) goes through
  :func:`call_async`: the request waits on the reactor, like any pause, and goes on once
  Redis is back, so politeness holds after an outage as before it;
- a call that can wait for its next turn (a prune slice, a robots.txt lock renewal, an
  adaptive delay, a backoff reset, a copy of the counters) is dropped for now
  (:func:`skipped`): it is made again on the next tick or response.

Past the outage's deadline (FLEET_REDIS_RETRY_TIMEOUT) every call fails at once, and the
scheduler, which hits the same deadline, stops the worker (exit 3). A waiting request
keeps waiting until then: Redis may come back first, and then the crawl goes on. Once
the worker is stopping, the request ends with :class:`RedisAway`, which is never turned
into an acknowledgement (:func:`unfinished_if_away`): it stays leased and runs again.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from scrapy.exceptions import IgnoreRequest
from scrapy.utils.asyncio import sleep

from scrapy_fleet.frontier import codec
from scrapy_fleet.frontier.queue import RedisOutOfMemory, RedisRetryLater
from scrapy_fleet.politeness import frontier_of
from scrapy_fleet.redis_server import RedisUnavailable

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

T = TypeVar("T")
# what a call made with wait=False raises while Redis is away or full, before and after
# the deadline
AWAY = (RedisRetryLater, RedisUnavailable, RedisOutOfMemory)
PAST_DEADLINE_POLL = 1.0  # seconds between attempts once the deadline has passed

# crawler -> time.monotonic() before which no waiting call tries Redis again: one failed
# attempt speaks for all the requests waiting, so they do not each try a connection
_next_attempt: weakref.WeakKeyDictionary[Crawler, float] = weakref.WeakKeyDictionary()


class RedisAway(IgnoreRequest):
    """Redis is away and this worker is stopping: the request was not done here.

    It is not acknowledged (see :func:`unfinished_if_away`): it stays leased, and returns
    to the queue when the worker leaves or its leases are reclaimed. An IgnoreRequest, so
    Scrapy does not log it as a download error; the request's errback does see it.
    """


async def call_async(crawler: Crawler, attempt: Callable[[], T], what: str) -> T:
    """``attempt()`` (a call on a store that does not wait) until it succeeds, awaiting
    each pause on the reactor instead of sleeping on it.

    Raises :class:`RedisAway` once Redis is away and the worker is stopping (the
    scheduler gave up at the deadline, or stops on another fault).
    """
    while True:
        pause = _next_attempt.get(crawler, 0.0) - time.monotonic()
        if pause <= 0:
            try:
                return attempt()
            except RedisRetryLater as later:
                pause = later.pause
            except (RedisUnavailable, RedisOutOfMemory):
                # past the deadline: the scheduler stops the worker at its next call; until
                # then keep trying, since Redis may be back before that call is made
                pause = PAST_DEADLINE_POLL
            _next_attempt[crawler] = time.monotonic() + pause
        if frontier_of(crawler) is None:
            raise RedisAway(f"Redis is away and this worker is stopping: could not {what}")
        await sleep(pause)


@contextmanager
def unfinished_if_away(request: Request) -> Iterator[None]:
    """A request that ends with :class:`RedisAway` in this block is not acknowledged."""
    try:
        yield
    except RedisAway:
        # The scheduler acknowledges a request by the lease id in its meta once the engine
        # is done with it; without one it acknowledges nothing, and the lease stays in
        # Redis: handed back when the worker leaves, or reclaimed once it is gone.
        if request.meta.pop(codec.LEASE_META_KEY, None) is not None:
            logger.info("Not done, left leased for another run: %s", request)
        raise


def skipped(stats: StatsCollector | None, what: str, exc: Exception) -> None:
    """A call that can wait for its next turn was dropped while Redis is away."""
    logger.debug("Redis is away: skipped %s for now (%s)", what, exc)
    if stats is not None:
        stats.inc_value(f"fleet/politeness/redis_skipped/{what.replace(' ', '_')}")
