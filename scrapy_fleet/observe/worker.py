"""What a worker tells the crawl about itself: its share of the crawl's counters, the
requests that failed (each once, by kind and by host), and its own row of the dashboard's
worker table (host, pid, launcher slot, restarts, pages, state, why it idles).

The scheduler calls :meth:`WorkerReport.request_finished` for every request it leased once
the engine is done with it, :meth:`WorkerReport.callback_failed` when a callback or errback
raised, and sends :meth:`WorkerReport.pending` to Redis every ``REPORT_INTERVAL`` while it
changes (so the crawl's totals move while pages are crawled, not in heartbeat steps);
:meth:`WorkerReport.sent` books what Redis took. Counts are deltas against what was booked
as sent, and each report has the next number: one that Redis did not answer is sent again
as it was, under its number, until it is answered (Redis adds a number once), and only
then comes the next one with what happened meanwhile. So a report is never lost and never
counted twice, even when the connection drops between Redis taking it and its answer.
"""

from __future__ import annotations

import json
import os
import socket
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from twisted.python.failure import Failure

from scrapy_fleet.frontier.queue import ReportDelta

REPORT_INTERVAL = 1.0  # s between reports while something changed

# Scrapy stats a worker adds to the crawl's totals (the ``stats`` hash): stat -> field.
# ``fleet/errors`` is counted here, once per failed request.
TOTALS = {
    "response_received_count": "pages",
    "item_scraped_count": "items",
    "fleet/errors": "errors",
    "downloader/exception_count": "download_errors",
}
ERRORS_STAT = "fleet/errors"

MAX_KINDS = 50  # distinct error kinds a worker names; later ones count as "other"
_CALLBACK_FAILED_KEPT = 10_000  # leases whose callback raised, awaiting their end

# `scrapy fleet` tells each worker which of its slots it runs: "<slot> <restarts>"
LAUNCH_SLOT_ENV = "FLEET_LAUNCH_SLOT"


def launch_slot(environ: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """(the launcher's slot label, that slot's restarts); ("", 0) for a worker run by hand."""
    label, _, restarts = environ.get(LAUNCH_SLOT_ENV, "").strip().partition(" ")
    try:
        return label[:100], max(0, int(restarts or 0))
    except ValueError:
        return label[:100], 0


@dataclass
class Report(ReportDelta):
    """One report: deltas since the last one Redis took (``totals``: stats field ->
    amount to add; ``kinds``/``hosts``: failed requests to add by kind and download
    slot), the worker's row (``info``, JSON) and its number (``seq``: 1, 2, ...)."""

    snapshot: dict[str, int] = field(default_factory=dict)  # the totals as sent


def failure_kind(result: Any, spider: Any = None, settings: Any = None) -> str | None:
    """How a request that ended with ``result`` failed, or None if it did not.

    A download that raised after its retries fails with the exception's class name
    (``DNSLookupError``, ``TimeoutError``...); IgnoreRequest (robots.txt, a skipped host)
    is not a failure, as in Scrapy. A final response of status 400 or more fails as
    ``HTTP <status>`` unless the spider asked to handle that status (HttpErrorMiddleware's
    rules). A redirect or retry that replaced the request is not an end: it ends later,
    as a request of its own.
    """
    if isinstance(result, Failure):
        if isinstance(result.value, IgnoreRequest):
            return None
        return type(result.value).__name__
    if isinstance(result, Response) and result.status >= 400:
        if _status_handled(result, spider, settings):
            return None
        return f"HTTP {result.status}"
    return None


def _status_handled(response: Response, spider: Any, settings: Any) -> bool:
    meta = response.meta
    if meta.get("handle_httpstatus_all"):
        return True
    if "handle_httpstatus_list" in meta:
        return response.status in meta["handle_httpstatus_list"]
    if getattr(spider, "handle_httpstatus_all", False):
        return True
    if response.status in getattr(spider, "handle_httpstatus_list", ()):
        return True
    if settings is not None:
        if settings.getbool("HTTPERROR_ALLOW_ALL"):
            return True
        return response.status in settings.getlist("HTTPERROR_ALLOWED_CODES")
    return False


class WorkerReport:
    def __init__(self, stats: Any, worker_id: str, *, launch_label: str = "",
                 restarts: int = 0) -> None:
        self.stats = stats
        self.worker_id = worker_id
        self.launch_label = launch_label
        self.restarts = restarts
        self.state = "starting"
        self.why = ""
        self._kinds: Counter[str] = Counter()  # not yet sent
        self._hosts: Counter[str] = Counter()
        self._callback_failed: OrderedDict[str, str] = OrderedDict()  # lease -> kind
        self._sent: dict[str, int] = {}  # totals as Redis last took them
        self._sent_info = ""
        self._seq = 0  # the number of the last report Redis took
        self._unanswered: Report | None = None  # sent, not answered: it goes again as is

    @classmethod
    def for_this_process(cls, stats: Any, worker_id: str) -> WorkerReport:
        label, restarts = launch_slot()
        return cls(stats, worker_id, launch_label=label, restarts=restarts)

    # --- what happened ---------------------------------------------------------------

    def callback_failed(self, lease: str | None, exc: BaseException) -> None:
        """A callback or errback of the request leased as ``lease`` raised."""
        if lease is None:
            return
        self._callback_failed[lease] = f"callback {type(exc).__name__}"
        while len(self._callback_failed) > _CALLBACK_FAILED_KEPT:
            self._callback_failed.popitem(last=False)

    def request_finished(self, lease: str, host: str, result: Any, spider: Any = None,
                         settings: Any = None) -> None:
        """The engine is done with a leased request that ended with ``result``: count it
        if it failed (once, whatever raised after the download as well)."""
        kind = failure_kind(result, spider, settings)
        callback_kind = self._callback_failed.pop(lease, None)
        kind = kind or callback_kind
        if kind is None:
            return
        if kind not in self._kinds and len(self._kinds) >= MAX_KINDS:
            kind = "other"
        self.stats.inc_value(ERRORS_STAT)
        self._kinds[kind] += 1
        self._hosts[host] += 1

    def set_state(self, state: str, why: str = "") -> None:
        self.state, self.why = state, why

    # --- what goes to Redis ----------------------------------------------------------

    def info(self, current: Mapping[str, int]) -> str:
        return json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(), "launch": self.launch_label,
            "restarts": self.restarts, "pages": current.get("pages", 0),
            "items": current.get("items", 0), "errors": current.get("errors", 0),
            "state": self.state, "why": self.why,
        }, sort_keys=True)

    def pending(self) -> Report | None:
        """What is not yet in Redis; None when nothing changed since the last report. A
        report that was not answered comes back unchanged until it is."""
        if self._unanswered is not None:
            return self._unanswered
        current = {f: int(self.stats.get_value(stat, 0) or 0) for stat, f in TOTALS.items()}
        totals = {f: v - self._sent.get(f, 0) for f, v in current.items()}
        totals = {f: v for f, v in totals.items() if v}
        info = self.info(current)
        if not totals and not self._kinds and info == self._sent_info:
            return None
        self._unanswered = Report(totals, dict(self._kinds), dict(self._hosts), info,
                                  self._seq + 1, snapshot=current)
        return self._unanswered

    def sent(self, report: Report) -> None:
        """Redis took ``report`` (now, or at an earlier try whose answer was lost). A
        report booked twice (it rode with a flush and went with a tick too), or after a
        later one, changes nothing."""
        if self._unanswered is report:
            self._unanswered = None
        if report.seq <= self._seq:
            return
        self._seq = report.seq
        self._sent = report.snapshot
        self._sent_info = report.info
        self._kinds.subtract(report.kinds)
        self._hosts.subtract(report.hosts)
        self._kinds = +self._kinds  # drop what reached 0
        self._hosts = +self._hosts
