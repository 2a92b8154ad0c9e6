"""The end-of-run summary and --status text (scrapy_fleet/launcher/report.py)."""

from __future__ import annotations

from scrapy_fleet.launcher.report import errors_by_kind, format_status, summary

STATUS = {
    "stats": {"pages": 130, "items": 120, "errors": 14, "pending": 0, "leased": 0},
    "state": {"status": "done", "started_at": "1700000000", "finished_at": 1700000100.5},
    "seen": 130, "workers": [],
    "errors_by_kind": {"HTTP 404": 10, "DNSLookupError": 3, "callback ValueError": 1},
}


def test_failed_requests_by_kind_most_frequent_first():
    assert errors_by_kind(STATUS["errors_by_kind"]) == \
        "HTTP 404 10, DNSLookupError 3, callback ValueError 1"
    many = {f"HTTP {400 + i}": 1 for i in range(10)}
    assert errors_by_kind(many, shown=8).endswith(", 2 more kinds 2")


def test_the_summary_gives_this_runs_pages_and_the_kinds_of_errors():
    text = summary("links", "finished", STATUS, None, 10.0, [], None, pages_before=30)
    assert "errors 14" in text
    assert "failed requests: HTTP 404 10, DNSLookupError 3" in text
    # 100 pages in this run's 10 s; the crawl's times are in seconds
    assert "(100 pages in this run, 10.0 pages/s; whole crawl 0:01:40)" in text


def test_status_text_has_the_kinds_and_the_finish_time():
    text = format_status("links", "redis://h:6379/0", STATUS)
    assert "  failed requests  HTTP 404 10" in text
    assert "finished  20" in text  # a date, from finished_at in seconds
