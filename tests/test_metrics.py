"""/metrics: the crawl's own totals in Prometheus' text format, parsed back with
prometheus_client's parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from conftest import fp, open_frontier
from scrapy_fleet.observe.metrics import COUNTERS, GAUGES, render


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
