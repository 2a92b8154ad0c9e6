"""429/503 back-off for the whole fleet (scrapy_fleet/politeness/backoff.py)."""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

import pytest

from conftest import open_frontier, run_link_spiders, total
from local_site import Host, PoliteSite, gaps, summary
from scrapy_fleet.politeness.backoff import parse_retry_after
from scrapy_fleet.politeness.store import PolitenessStore


# --- Retry-After ----------------------------------------------------------------------


def test_retry_after_in_seconds_or_as_an_http_date():
    assert parse_retry_after(b"2") == 2.0
    assert parse_retry_after(" 120 ") == 120.0
    now = time.time()
    assert 29 <= parse_retry_after(formatdate(now + 30, usegmt=True), now=now) <= 30
    # relative to the server's Date header when there is one, not to our clock
    assert parse_retry_after(b"Wed, 21 Oct 2026 07:28:30 GMT", b"Wed, 21 Oct 2026 07:28:00 GMT") == 30.0
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0  # in the past
    for bad in (None, b"", b"soon", b"-5", b"1.5e3", b"Thu, 99 Foo 2026"):
        assert parse_retry_after(bad) is None, bad


# --- the BACKOFF script ------------------------------------------------------------------


@pytest.fixture
def store(redis_client, redis_url, key_prefix) -> PolitenessStore:
    return PolitenessStore(open_frontier(redis_client, redis_url, key_prefix))


def test_retry_after_pauses_the_slot_for_every_worker(store, redis_client, redis_url, key_prefix):
    frontier = store.frontier
    other = open_frontier(redis_client, redis_url, key_prefix, "w2")
    frontier.flush([(b"1" * 20, "busy", 0, b"b"), (b"2" * 20, "calm", 0, b"c")])
    count, pause = store.backoff("busy", 0.4, base=0.1, cap=60)
    assert (count, pause) == (1, 0.4)
    assert [blob for _, blob in other.flush(pop=5).popped] == [b"c"]
    started = time.monotonic()
    while not other.flush(pop=5).popped:
        assert time.monotonic() - started < 5
        time.sleep(0.01)
    assert time.monotonic() - started >= 0.3


def test_repeats_double_the_pause_up_to_the_cap(store):
    assert store.backoff("h", None, base=0.05, cap=0.3) == (1, 0.05)
    # answers to requests already in flight when the pause began don't double it
    assert store.backoff("h", None, base=0.05, cap=0.3)[0] == 1
    pauses = []
    for _ in range(4):
        while store.reserve("h") > 0:  # wait for the pause to end
            time.sleep(0.01)
        pauses.append(store.backoff("h", None, base=0.05, cap=0.3))
    assert [n for n, _ in pauses] == [2, 3, 4, 5]
    assert [p for _, p in pauses] == [0.1, 0.2, 0.3, 0.3]
    # Retry-After wins over a shorter backoff, but the cap still holds
    assert store.backoff("h", 10, base=0.05, cap=0.3)[1] <= 0.3
    # a success resets the count
    store.reset_backoff("h")
    while store.reserve("h") > 0:
        time.sleep(0.01)
    assert store.backoff("h", None, base=0.05, cap=0.3) == (1, 0.05)
    assert store.counters(["politeness/backoff"]) == [8]


# --- end to end ------------------------------------------------------------------------


@pytest.fixture
def web(serve):
    return serve(PoliteSite([
        Host(pages=8, scripted={"/p/2": [(429, {"Retry-After": "2"})]}),
        Host(pages=40),
    ]))


@pytest.mark.slow
def test_429_with_retry_after_pauses_that_host_for_the_whole_fleet(tmp_path: Path, web, fleet_settings):
    settings = {**fleet_settings, "DOWNLOAD_DELAY": "0.2", "ROBOTSTXT_OBEY": "True"}
    workers = run_link_spiders(tmp_path, web.hub_url, settings)

    busy, calm = web.host(0), web.host(1)
    log = web.log(busy)
    refused = next(a for a in log if a.status == 429)
    after = [a for a in log if a.at > refused.at]
    # nothing reached the host from any worker for the Retry-After (generous bound)...
    assert after and after[0].at - refused.at >= 1.8, summary(gaps(log))
    # ...while the other host went on being crawled
    assert any(refused.at < a.at < refused.at + 1.8 for a in web.log(calm))
    # the refused page was retried after the pause and fetched
    assert web.pages(busy).count("/p/2") == 2
    assert sorted(set(web.pages(busy))) == sorted(f"/p/{k}" for k in range(8))
    assert total(workers, "fleet/politeness/backoff") == 1
    assert "answered 429 (Retry-After: 2 s): pausing it for every worker for 2.0 s" in "".join(
        w.text for w in workers)
