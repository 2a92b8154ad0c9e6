"""A key for every item without one of its own: its request's fingerprint and its place
in that callback's output.

The fleet runs a request at least once: a worker killed after writing an item but before
the request's ack, or frozen past its lease and then resumed, runs it again (or another
worker does). Items that declare a ``dedupe_key`` are recognised by its value; for the
others, :class:`ItemKeyMiddleware` gives each item yielded by a callback a key that is the
same every time that request runs (the fingerprint of ``response.request`` and the
item's ordinal among the callback's items), and the JSON-lines pipeline writes an item
with a given key once (see ``docs/spiders.md``).

The key travels with the item object, from the middleware to the pipeline, in an
:class:`ItemKeys` registry shared through the crawler. Items that get no key: items from
``start()`` (no request), items from an errback of a download error (Scrapy does not pass
them through spider middlewares), and an item that a pipeline running before the
JSON-lines one replaces with another object.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from scrapy import Request, signals

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response
    from typing_extensions import Self

logger = logging.getLogger(__name__)

# keys of items not yet seen by the pipeline; more than this means items are replaced
# before they reach it (their keys are never taken), so the oldest are let go
_PENDING_LIMIT = 100_000

_REGISTRIES: weakref.WeakKeyDictionary[Any, ItemKeys] = weakref.WeakKeyDictionary()


def request_item_key(fingerprint: bytes, ordinal: int) -> bytes:
    """The key of the ``ordinal``-th item (from 0) of the request with ``fingerprint``."""
    return hashlib.blake2b(b"%s#%d" % (fingerprint, ordinal), digest_size=16).digest()


class ItemKeys:
    """Item object -> request key, from the middleware to the pipeline that consumes it."""

    def __init__(self, limit: int = _PENDING_LIMIT) -> None:
        self.enabled = False  # set by a consumer; until then no key is computed
        self.limit = limit
        # by id(): dicts cannot be weakly referenced; the item is held so its id stays its own
        self._pending: dict[int, tuple[Any, bytes]] = {}
        self._warned = False

    @classmethod
    def of(cls, crawler: Crawler) -> ItemKeys:
        """The crawler's registry, made on first use; items leave it however they end."""
        keys = _REGISTRIES.get(crawler)
        if keys is None:
            keys = _REGISTRIES[crawler] = cls()
            for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
                crawler.signals.connect(keys.discard, signal=signal)
        return keys

    def enable(self) -> None:
        self.enabled = True

    def set(self, item: Any, key: bytes) -> None:
        self._pending[id(item)] = (item, key)
        if len(self._pending) > self.limit:
            del self._pending[next(iter(self._pending))]
            if not self._warned:
                self._warned = True
                logger.warning(
                    "More than %d items got a request key that no pipeline took: a pipeline "
                    "before JsonLinesPipeline probably replaces items; those are written "
                    "without one (a re-run request may write them again)", self.limit,
                )

    def pop(self, item: Any) -> bytes | None:
        entry = self._pending.pop(id(item), None)
        if entry is None or entry[0] is not item:
            return None
        return entry[1]

    def discard(self, item: Any) -> None:
        entry = self._pending.get(id(item))
        if entry is not None and entry[0] is item:
            del self._pending[id(item)]

    def __len__(self) -> int:
        return len(self._pending)


class ItemKeyMiddleware:
    """Give each item a callback yields the key ``request_item_key(fingerprint, ordinal)``."""

    def __init__(self, keys: ItemKeys, fingerprint: Callable[[Request], bytes]) -> None:
        self.keys = keys
        self.fingerprint = fingerprint

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(ItemKeys.of(crawler), crawler.request_fingerprinter.fingerprint)

    async def process_spider_output(
        self, response: Response, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        request = response.request
        base: bytes | None = None
        ordinal = 0
        async for obj in result:
            if self.keys.enabled and request is not None and obj is not None and not isinstance(obj, Request):
                if base is None:
                    base = self.fingerprint(request)
                self.keys.set(obj, request_item_key(base, ordinal))
                ordinal += 1
            yield obj
