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


_exit_status = 0


def record_exit_status(status: int) -> None:
    """A fleet component stopped the crawl on a fault: the process must not exit 0.

    Scrapy's exit status only says whether a crawl could start, not how it ended, so the
    fleet's ``crawl`` and ``runspider`` commands (scrapy_fleet.commands) exit with this.
    A script that runs a CrawlerProcess itself can read :func:`exit_status`.
    """
    global _exit_status
    _exit_status = _exit_status or status


def exit_status() -> int:
    """The status recorded by :func:`record_exit_status` in this process (0 if none)."""
    return _exit_status
