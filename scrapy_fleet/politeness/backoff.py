"""429 Too Many Requests / 503 Service Unavailable: the whole fleet backs off that host.

On such a response the host's download slot is paused in Redis, so no worker leases any
of its requests before the pause ends; other hosts carry on. The pause is the response's
``Retry-After`` (seconds, or an HTTP date) if it has one, else FLEET_BACKOFF_BASE; each
further 429/503 that arrives after the previous pause has ended doubles it, up to
FLEET_BACKOFF_MAX (which also caps Retry-After). Responses to requests that were already
in flight when the pause began only lengthen it, never double it. Any other response from
the host resets the count (and so does a quiet FLEET_BACKOFF_MAX after the last pause).

The response itself goes on to Scrapy's RetryMiddleware (429 and 503 are in its default
RETRY_HTTP_CODES): the retried request goes back to the frontier and waits for the pause
like every other request of that host. This middleware must therefore sit *below*
RetryMiddleware (a higher number than 550) so that it sees the response first.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from scrapy_fleet.politeness import frontier_of, slot_key
from scrapy_fleet.politeness.config import PolitenessConfig
from scrapy_fleet.politeness.outage import AWAY, call_async, skipped, unfinished_if_away
from scrapy_fleet.politeness.store import PolitenessStore

if TYPE_CHECKING:
    from scrapy import Request, Spider
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from typing_extensions import Self

logger = logging.getLogger(__name__)


def parse_retry_after(value: bytes | str | None, date: bytes | str | None = None,
                      now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    An HTTP date is taken relative to the response's ``Date`` header when there is one
    (the server's clock, not ours), else to the local clock. None if absent or invalid.
    """
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    reference = now if now is not None else time.time()
    if date is not None:
        try:
            reference = parsedate_to_datetime(
                date.decode("latin-1") if isinstance(date, bytes) else date
            ).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return max(0.0, when - reference)


class FleetBackoffMiddleware:
    def __init__(self, crawler: Crawler, config: PolitenessConfig) -> None:
        self.crawler = crawler
        self.config = config
        self._backing_off: set[str] = set()  # slots this worker saw paused: reset on success

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, PolitenessConfig.from_settings(crawler.settings))

    async def process_response(self, request: Request, response: Response,
                               spider: Spider | None = None) -> Response:
        frontier = frontier_of(self.crawler)
        if frontier is None:
            return response
        slot = slot_key(self.crawler, request)
        store = PolitenessStore.of(frontier)
        if response.status not in self.config.backoff_codes:
            if slot in self._backing_off:
                try:
                    store.reset_backoff(slot)
                    self._backing_off.discard(slot)
                except AWAY as exc:
                    # not worth holding a good response for: a count left behind only makes
                    # the next pause longer (and lapses after FLEET_BACKOFF_MAX); the next
                    # response from the slot tries again
                    skipped(self.crawler.stats, "backoff reset", exc)
            return response
        retry_after = parse_retry_after(response.headers.get(b"Retry-After"), response.headers.get(b"Date"))
        with unfinished_if_away(request):
            # the pause must be in Redis before the retry can be leased, or the host would
            # get it back as soon as Redis returns, Retry-After or not: the response waits
            count, pause = await call_async(
                self.crawler,
                lambda: store.backoff(slot, retry_after, self.config.backoff_base, self.config.backoff_max),
                "back off a download slot",
            )
        self._backing_off.add(slot)
        self.crawler.stats.inc_value("fleet/politeness/backoff")
        logger.info(
            "%s answered %d%s: pausing it for every worker for %.1f s (%d in a row)",
            slot, response.status,
            f" (Retry-After: {retry_after:g} s)" if retry_after is not None else "",
            pause, count,
        )
        return response
