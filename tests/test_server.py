"""The crawl's numbers over HTTP (scrapy_fleet/observe/server.py): in-process against a
real Redis, and through `scrapy fleet web` / `scrapy fleet --web` after a real crawl."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import Fleet, fleet_args, fp, frontier, make_project, open_frontier, wait_for
from local_site import LinkedSite
from scrapy_fleet.observe.server import StatusServer, parse_address


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def totals(text: str) -> dict[str, float]:
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if set(s.labels) == {"spider"}}


def test_metrics_status_and_page_from_one_reading(redis_client, redis_url, key_prefix):
    crawl = open_frontier(redis_client, redis_url, key_prefix)
    crawl.flush([(fp(n), "h", 0, b"x") for n in range(4)])
    crawl.add_totals({"pages": 3})
    server = StatusServer("spider", crawl.status)
    url = server.start()
    try:
        code, kind, text = get(url + "metrics")
        assert code == 200 and kind.startswith("text/plain; version=")
        assert totals(text)["fleet_pages_total"] == 3 and totals(text)["fleet_queue_pending"] == 4
        code, kind, text = get(url + "api/status")
        assert code == 200 and kind == "application/json"
        assert json.loads(text)["stats"]["pending"] == 4 and json.loads(text)["spider"] == "spider"
        code, kind, text = get(url)
        assert code == 200 and kind.startswith("text/html") and "rate-chart" in text
        for asset in re.findall(r'(?:src|href)="/(static/[^"]+)"', text):
            assert get(url + asset)[0] == 200
        assert get(url + "nothing")[0] == 404
    finally:
        server.stop()


def test_history_samples_the_totals_while_the_server_runs(redis_client, redis_url, key_prefix):
    crawl = open_frontier(redis_client, redis_url, key_prefix)
    crawl.add_totals({"pages": 3}, kinds={"HTTP 404": 1})
    server = StatusServer("spider", crawl.status, sample_every=0.05)
    url = server.start()
    try:
        wait_for(lambda: len(server.history) >= 3, what="3 history points")
        crawl.add_totals({"pages": 2})
        first = len(server.history)
        wait_for(lambda: len(server.history) > first, what="a point after the change")
        history = json.loads(get(url + "api/history")[2])
        points = history["points"]
        assert history["every"] == 0.05 and len(points) >= 4
        assert points[0]["pages"] == 3 and points[-1]["pages"] == 5
        assert points[0]["errors_by_kind"] == {"HTTP 404": 1}
        assert all(a["t"] <= b["t"] for a, b in zip(points, points[1:]))
    finally:
        server.stop()


def test_open_pages_share_the_samplers_reading(redis_client, redis_url, key_prefix):
    """Redis is read once per sampling interval, however many pages ask."""
    crawl = open_frontier(redis_client, redis_url, key_prefix)
    readings = []

    def read() -> dict:
        readings.append(1)
        return crawl.status()

    server = StatusServer("spider", read, sample_every=60)
    url = server.start()
    try:
        wait_for(lambda: len(server.history) == 1, what="the first sample")
        for _ in range(5):
            assert get(url + "api/status")[0] == 200 and get(url + "metrics")[0] == 200
        assert len(readings) == 1
    finally:
        server.stop()


def test_a_status_that_cannot_be_read_is_a_503_naming_why():
    def unreachable() -> dict:
        raise ConnectionError("Redis at redis://10.9.9.9:6379/0 refused the connection")

    server = StatusServer("spider", unreachable)
    url = server.start()
    try:
        code, _, text = get(url + "metrics")
        assert code == 503 and "refused the connection" in text
    finally:
        server.stop()


def test_addresses():
    assert parse_address("8080") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9") == ("0.0.0.0", 9)
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("web", "1:99999"):
        with pytest.raises(ValueError, match="--web"):
            parse_address(bad)


@pytest.mark.slow
def test_fleet_web_serves_the_totals_of_a_crawl(tmp_path: Path, serve, fleet_settings, redis_url):
    site = serve(LinkedSite(40))
    project = make_project(tmp_path)
    # a run with --web: the server comes up with the launcher and goes with it
    crawl = Fleet(project, fleet_args(site.url, fleet_settings, "-n", "1", "--web", "127.0.0.1:0"))
    assert crawl.wait() == 0
    assert re.search(r"Serving the crawl of 'links' on http://127\.0\.0\.1:\d+/", crawl.text)

    # then `scrapy fleet web`, which watches without joining
    web = Fleet(project, ["web", "links", "--web", "127.0.0.1:0",
                          *(f"-s{k}={v}" for k, v in fleet_settings.items())], "web")
    try:
        web.wait_for(r"Serving the crawl")
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", web.text).group(1)
        code, _, text = get(url + "metrics")
        assert code == 200
        got = totals(text)
        status = frontier(redis_url, fleet_settings["FLEET_KEY_PREFIX"]).status()
        fetched = sum(site.page_fetches().values())
        assert got["fleet_pages_total"] == status["stats"]["pages"] >= fetched == 40
        assert got["fleet_items_total"] == status["stats"]["items"] == 40
        assert got["fleet_requests_total"] == got["fleet_requests_done_total"] == 40
        assert got["fleet_queue_pending"] == got["fleet_queue_leased"] == 0
        assert json.loads(get(url + "api/status")[2])["state"]["status"] == "done"
    finally:
        web.proc.send_signal(signal.SIGINT)
    assert web.finish() == 0
