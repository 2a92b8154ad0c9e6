"""Worker outcomes: written by a worker's frontier in a real Redis, found by the launcher."""

from __future__ import annotations

import pytest

from scrapy_fleet.config import FleetConfig
from scrapy_fleet.frontier.keys import CrawlKeys
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.launcher.outcomes import Outcome, find_outcome
from scrapy_fleet.launcher.watch import CrawlWatch
from scrapy_fleet.redis_server import connect

FINISHED = {"reason": "finished", "pages": 171, "items": 170, "error": None, "exit_status": 0}


@pytest.fixture
def keys(key_prefix: str) -> CrawlKeys:
    return CrawlKeys(key_prefix, "links")


def record(redis_url: str, keys: CrawlKeys, worker_id: str, outcome: dict) -> None:
    """What a worker's scheduler does as it closes."""
    frontier = RedisFrontier(connect(redis_url), keys, worker_id, url=redis_url)
    try:
        frontier.record_outcome(outcome)
    finally:
        frontier.client.close()


def test_the_launcher_finds_what_its_child_recorded(redis_url, keys):
    record(redis_url, keys, "hosta:4242:1f2e3d", {**FINISHED, "pid": 4242})
    record(redis_url, keys, "hosta:977:a1b2c3", {"reason": "fleet_error", "pages": 3, "items": 0,
                                                 "error": "Redis is out of memory",
                                                 "exit_status": 4, "pid": 977})
    watch = CrawlWatch(redis_url, keys, FleetConfig(redis_url=redis_url))
    try:
        outcomes = watch.outcomes()
    finally:
        watch.close()
    assert outcomes is not None
    assert find_outcome(outcomes, 4242, host="hosta") == (
        "hosta:4242:1f2e3d", Outcome("finished", 171, 170, None, 0))
    assert find_outcome(outcomes, 977, host="hosta") == (
        "hosta:977:a1b2c3", Outcome("fleet_error", 3, 0, "Redis is out of memory", 4))


def test_another_host_or_pid_is_not_ours():
    outcomes = {"hostb:4242:1f2e3d": {**FINISHED, "pid": 4242},
                "hosta:42420:000000": {**FINISHED, "pid": 42420},
                "hosta:4242:bad": {**FINISHED, "pid": 1}}  # its id and its pid disagree
    assert find_outcome(outcomes, 4242, host="hosta") is None


def test_a_reused_pid_does_not_find_an_older_process_outcome():
    older = {"hosta:4242:aaaaaa": {**FINISHED, "pid": 4242}}
    assert find_outcome(older, 4242, host="hosta", ignore=older) is None
    newer = {**older, "hosta:4242:bbbbbb": {**FINISHED, "pages": 5, "pid": 4242}}
    found = find_outcome(newer, 4242, host="hosta", ignore=older)
    assert found is not None and found[0] == "hosta:4242:bbbbbb" and found[1].pages == 5


def test_junk_values_read_as_unknown():
    outcome = Outcome.parse({"reason": 7, "pages": "many", "items": -3, "error": "",
                             "exit_status": True})
    assert outcome == Outcome(None, 0, 0, None, 0)


def test_junk_in_the_hash_is_left_out(redis_url, keys):
    client = connect(redis_url)
    try:
        client.hset(keys.outcomes, mapping={"hosta:1:x": b"\xff not json", "hosta:2:y": "[1, 2]"})
    finally:
        client.close()
    record(redis_url, keys, "hosta:3:z", {**FINISHED, "pid": 3})
    watch = CrawlWatch(redis_url, keys, FleetConfig(redis_url=redis_url))
    try:
        assert list(watch.outcomes() or {}) == ["hosta:3:z"]
    finally:
        watch.close()


def test_an_unreachable_redis_reads_as_none(tmp_path, keys):
    url = f"unix://{tmp_path / 'nothing.sock'}"
    watch = CrawlWatch(url, keys, FleetConfig(redis_url=url, redis_retry_timeout=0.1))
    assert watch.outcomes() is None and watch.status() is None
    assert watch.error
    watch.close()
