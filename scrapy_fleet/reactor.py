"""Waiting inside the running reactor (any Twisted reactor, asyncio or not)."""

from __future__ import annotations

from scrapy.utils.defer import maybe_deferred_to_future


async def sleep(seconds: float) -> None:
    """Wait without blocking the reactor; ``sleep(0)`` gives it one turn."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await maybe_deferred_to_future(deferLater(reactor, seconds, lambda: None))
