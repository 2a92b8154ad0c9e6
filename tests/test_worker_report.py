"""What a worker reports: failed requests counted once each, by kind and host; deltas
that survive a report Redis did not take; its row of the worker table."""

from __future__ import annotations

import json

from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request, Response
from scrapy.settings import Settings
from twisted.internet.error import DNSLookupError
from twisted.python.failure import Failure

from scrapy_fleet.observe.worker import (
    ERRORS_STAT,
    MAX_KINDS,
    WorkerReport,
    failure_kind,
    launch_slot,
)


class Stats:
    """The two calls of Scrapy's stats collector a report uses."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def get_value(self, key: str, default: int = 0) -> int:
        return self.values.get(key, default)

    def inc_value(self, key: str, count: int = 1) -> None:
        self.values[key] = self.values.get(key, 0) + count


def response(status: int, **meta) -> Response:
    return Response("http://a.test/", status=status, request=Request("http://a.test/", meta=meta))


def failure(exc: BaseException) -> Failure:
    try:
        raise exc
    except BaseException:
        return Failure()


def test_what_counts_as_a_failed_request():
    assert failure_kind(failure(DNSLookupError("nope"))) == "DNSLookupError"
    assert failure_kind(failure(IgnoreRequest("robots.txt"))) is None  # not a failure in Scrapy
    assert failure_kind(response(200)) is None
    assert failure_kind(response(404)) == "HTTP 404"
    assert failure_kind(response(500)) == "HTTP 500"
    # the spider asked for these statuses: its callback handles them
    assert failure_kind(response(404, handle_httpstatus_list=[404])) is None
    assert failure_kind(response(404, handle_httpstatus_all=True)) is None

    class Spider:
        handle_httpstatus_list = [410]

    assert failure_kind(response(410), Spider()) is None
    assert failure_kind(response(404), Spider()) == "HTTP 404"
    allowed = Settings({"HTTPERROR_ALLOWED_CODES": [404]})
    assert failure_kind(response(404), None, allowed) is None
    assert failure_kind(response(404), None, Settings({"HTTPERROR_ALLOW_ALL": True})) is None
    assert failure_kind(Request("http://a.test/next")) is None  # replaced: ends later


def test_each_failed_request_counts_once_whatever_failed_after_it():
    stats = Stats()
    report = WorkerReport(stats, "w1")
    report.callback_failed("lease-1", ValueError("bad page"))
    report.request_finished("lease-1", "a.test", response(200))
    report.callback_failed("lease-2", KeyError("x"))  # its errback raised on a 404 too
    report.request_finished("lease-2", "b.test", response(404))
    report.request_finished("lease-3", "b.test", failure(DNSLookupError()))
    report.request_finished("lease-4", "b.test", response(200))  # a success
    report.callback_failed(None, ValueError())  # not a leased request: nothing to count
    assert stats.values[ERRORS_STAT] == 3
    pending = report.pending()
    assert pending is not None
    assert pending.kinds == {"callback ValueError": 1, "HTTP 404": 1, "DNSLookupError": 1}
    assert pending.hosts == {"a.test": 1, "b.test": 2}
    assert pending.totals == {"errors": 3}


def test_a_report_redis_did_not_answer_goes_again_as_it_was_then_what_came_after():
    stats = Stats()
    report = WorkerReport(stats, "w1", launch_label="2", restarts=1)
    stats.inc_value("response_received_count", 5)
    report.request_finished("l1", "a.test", response(503))
    first = report.pending()
    assert first is not None and first.totals == {"pages": 5, "errors": 1} and first.seq == 1
    # Redis did not answer; more happens meanwhile: the same report goes again, as it was
    stats.inc_value("response_received_count", 2)
    stats.inc_value("item_scraped_count", 4)
    report.request_finished("l2", "a.test", response(503))
    assert report.pending() is first
    report.sent(first)
    second = report.pending()
    assert second is not None and second.seq == 2
    assert second.totals == {"pages": 2, "items": 4, "errors": 1}
    assert second.kinds == {"HTTP 503": 1} and second.hosts == {"a.test": 1}
    report.sent(second)
    assert report.pending() is None  # nothing changed since
    stats.inc_value("response_received_count", 1)
    third = report.pending()
    assert third is not None and third.totals == {"pages": 1} and not third.kinds
    row = json.loads(third.info)
    assert (row["launch"], row["restarts"], row["pages"], row["items"], row["errors"]) == \
        ("2", 1, 8, 4, 2)
    report.sent(third)
    report.set_state("idle", "waiting for hosts")
    changed = report.pending()
    assert changed is not None and not changed.totals  # only the row changed
    assert json.loads(changed.info)["why"] == "waiting for hosts"


def test_error_kinds_are_bounded():
    stats = Stats()
    report = WorkerReport(stats, "w1")
    for i in range(MAX_KINDS + 5):
        report.request_finished(f"l{i}", "a.test", response(400 + i))
    pending = report.pending()
    assert pending is not None and len(pending.kinds) == MAX_KINDS + 1
    assert pending.kinds["other"] == 5


def test_the_launch_slot_comes_from_the_launcher():
    assert launch_slot({}) == ("", 0)
    assert launch_slot({"FLEET_LAUNCH_SLOT": "3 2"}) == ("3", 2)
    assert launch_slot({"FLEET_LAUNCH_SLOT": "3 junk"}) == ("3", 0)
