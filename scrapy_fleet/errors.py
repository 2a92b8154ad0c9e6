"""Exceptions shared by the fleet's parts (frontier, pipelines, launcher)."""

from __future__ import annotations


class FatalItemError(Exception):
    """An item could not be stored (a full disk, a read-only directory...).

    Raised by an item pipeline. The fleet scheduler then does **not** acknowledge the
    request that produced the item: the worker stops with a clear error and a non-zero
    exit status, and hands the request back, so the next run produces the item again.
    """


# exit statuses of a worker (``scrapy crawl``) that stopped on a fault it cannot fix
EXIT_REDIS_UNAVAILABLE = 3  # Redis unreachable past FLEET_REDIS_RETRY_TIMEOUT
EXIT_FATAL = 4  # anything else: output not writable, Redis out of memory, lost crawl state
