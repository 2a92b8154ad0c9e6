"""/metrics: the crawl's own totals in Prometheus' text format, parsed back with
prometheus_client's parser."""

from __future__ import annotations

import re
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    Fleet,
    fp,
    free_port,
    frontier,
    make_project,
    open_frontier,
    scrapy_args,
)
from local_site import LinkedSite
from scrapy_fleet.observe.metrics import COUNTERS, GAUGES, render
from scrapy_fleet.observe.server import StatusServer


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode()) for s in family.samples}


def test_every_number_is_the_crawls_own_total(redis_client, redis_url, key_prefix):
    frontier = open_frontier(redis_client, redis_url, key_prefix, concurrency_per_slot=100)
    frontier.flush([(fp(n % 8), f"h{n % 3}", 0, b"x%d" % n) for n in range(10)])
    leased = frontier.flush(pop=5).popped
    frontier.flush(acks=[lease for lease, _ in leased[:3]])
    frontier.add_totals({"pages": 7, "items": 4, "errors": 1, "download_errors": 2})
    frontier.heartbeat()
    status = frontier.status()

    got = samples(render("spider", status))
    spider = (("spider", "spider"),)
    for number in COUNTERS:
        assert got[(number.metric + "_total", spider)] == status["stats"].get(number.field, 0)
    for number in GAUGES:
        assert got[(number.metric, spider)] == status["stats"].get(number.field, 0)
    assert (got[("fleet_pages_total", spider)], got[("fleet_requests_total", spider)],
            got[("fleet_duplicates_total", spider)], got[("fleet_requests_done_total", spider)],
            got[("fleet_queue_pending", spider)], got[("fleet_queue_leased", spider)]) == (7, 8, 2, 3, 3, 2)
    assert got[("fleet_seen", spider)] == 8
    assert got[("fleet_crawl_state", (("spider", "spider"), ("state", "running")))] == 1
    assert got[("fleet_workers", (("spider", "spider"), ("state", "alive")))] == 1
    assert ("fleet_worker_heartbeat_age_seconds",
            (("spider", "spider"), ("worker", frontier.worker_id))) in got


def test_labels_are_escaped_and_junk_reads_as_zero():
    status = {"stats": {}, "state": {}, "seen": 0,
              "workers": [{"id": 'a"b\\c\nd', "alive": False, "last_heartbeat_s": 99.0, "seeding": False}]}
    got = samples(render('sp"ider', status))
    assert got[("fleet_pages_total", (("spider", 'sp"ider'),))] == 0
    assert got[("fleet_workers", (("spider", 'sp"ider'), ("state", "dead")))] == 1
    assert got[("fleet_worker_heartbeat_age_seconds", (("spider", 'sp"ider'), ("worker", 'a"b\\c\nd')))] == 99


@pytest.mark.slow
def test_errors_count_each_failed_request_once_everywhere(tmp_path, serve, fleet_settings,
                                                           redis_url):
    """A crawl whose requests fail in every way: the progress line's, the summary's,
    --status's and /metrics' errors are the same number, one per failed request."""
    site = serve(LinkedSite(4))
    dead = f"http://127.0.0.1:{free_port()}"
    project = make_project(tmp_path)
    crawl = Fleet(project, ["faulty", "-n", "2", *scrapy_args(
        {**fleet_settings, "RETRY_TIMES": 2}, {"site": site.url, "dead": dead})])
    assert crawl.wait() == 0, crawl.text
    view = frontier(redis_url, fleet_settings["FLEET_KEY_PREFIX"], "faulty")
    status = {**view.status(), "hosts": view.hosts()}
    stats = status["stats"]
    assert status["errors_by_kind"] == {"HTTP 404": 1, "HTTP 500": 1, "DownloadConnectionRefusedError": 1,
                                        "callback ValueError": 1, "HTTP 410": 1}
    assert stats["errors"] == 5
    assert stats["download_errors"] == 3  # the refused connection, tried 3 times
    # Scrapy's response_received_count: the 500s that were retried never reached the engine
    assert stats["items"] == 2 and stats["pages"] == 6
    assert re.search(r"totals: pages 6  items 2  errors 5  download errors 3", crawl.text)
    assert "failed requests: " in crawl.text and "HTTP 404 1" in crawl.text  # in the summary
    hosts = {h["host"]: h["errors"] for h in status["hosts"]["most_errors"]}
    assert hosts == {"127.0.0.1": 5}  # the dead port is the same download slot (its host)

    server = StatusServer("faulty", lambda: status)
    url = server.start()
    try:
        with urllib.request.urlopen(url + "metrics", timeout=10) as answer:
            got = samples(answer.read())
    finally:
        server.stop()
    spider = (("spider", "faulty"),)
    assert got[("fleet_errors_total", spider)] == 5
    assert got[("fleet_download_errors_total", spider)] == 3
    assert got[("fleet_pages_total", spider)] == 6 and got[("fleet_items_total", spider)] == 2
    by_kind = {dict(labels)["kind"]: v for (name, labels), v in got.items()
               if name == "fleet_errors_by_kind_total"}
    assert by_kind == status["errors_by_kind"]
    assert got[("fleet_host_errors_total", (("host", "127.0.0.1"), ("spider", "faulty")))] == 5
    assert got[("fleet_host_errors_total", (("host", "other"), ("spider", "faulty")))] == 0
