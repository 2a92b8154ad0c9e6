"""``scrapy fleet``: run N crawler processes on one shared Redis frontier, to the end.

The launcher never crawls itself and never forks while it holds a Redis connection or a
reactor: every worker is a fresh ``python -m scrapy crawl SPIDER`` child (fork + exec),
which opens its own reactor and its own Redis connection. The launcher only

* starts the embedded redis-server (when ``REDIS_URL`` is unset) before any child, so the
  children find it running, and wipes the previous crawl once (``--fresh``, or a crawl
  that is already done), never in the workers (:mod:`.opening`);
* lets exactly one worker run ``spider.start()`` into the frontier (``FLEET_SEED=1``);
  the others, restarted ones, and every ``--join`` worker get ``FLEET_SEED=0``
  (:mod:`.workers`);
* restarts a worker that dies, forwards Ctrl-C / SIGTERM in two stages (:mod:`.supervisor`);
* polls the crawl's status in Redis (:mod:`.watch`) for the progress line (:mod:`.progress`);
* decides its exit status (:mod:`.policy`) and prints a summary (:mod:`.report`).

:class:`Launcher` (:mod:`.launch`) puts these together. A worker's own log goes to
``<FLEET_DATA_DIR>/logs/<spider>/<launcher pid>-worker-K.log`` so that the terminal keeps
one progress line.
"""

from __future__ import annotations

from scrapy_fleet.launcher.launch import Launcher
from scrapy_fleet.launcher.options import (
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PROGRESS_INTERVAL,
    LaunchOptions,
)
from scrapy_fleet.launcher.policy import EXIT_FINISHED, EXIT_NOT_FINISHED, EXIT_USAGE
from scrapy_fleet.launcher.report import format_status, print_status, status_reader

__all__ = [
    "DEFAULT_MAX_RESTARTS",
    "DEFAULT_PROGRESS_INTERVAL",
    "EXIT_FINISHED",
    "EXIT_NOT_FINISHED",
    "EXIT_USAGE",
    "LaunchOptions",
    "Launcher",
    "format_status",
    "print_status",
    "status_reader",
]
