"""The crawl seen from outside: status() joins each worker with its reported row, counts
errors by kind, gives every time in seconds; hosts() ranks the busiest, slowest and most
failing hosts. Junk in any of those keys reads as nothing, never a traceback."""

from __future__ import annotations

import json

import pytest

from conftest import fp, open_frontier
from scrapy_fleet.frontier.queue import RedisFrontier


@pytest.fixture
def frontier(redis_client, redis_url, key_prefix) -> RedisFrontier:
    return open_frontier(redis_client, redis_url, key_prefix, "w1")


def row(**fields) -> str:
    return json.dumps({"host": "box", "pid": 41, "launch": "1", "restarts": 0, "pages": 0,
                       "items": 0, "errors": 0, "state": "crawling", "why": "", **fields})


def test_workers_come_with_their_rows_and_errors_by_kind(frontier, redis_client):
    frontier.add_totals({"pages": 9, "errors": 3}, kinds={"HTTP 404": 2, "DNSLookupError": 1},
                        hosts={"a.test": 2, "b.test": 1}, info=row(pages=9, errors=3))
    frontier.add_totals({}, kinds={"HTTP 404": 1}, hosts={"a.test": 1})
    # a worker that reported and left the crawl, and a row of junk
    redis_client.hset(frontier.keys.worker_info, "gone", row(pid=7, state="closed"))
    redis_client.hset(frontier.keys.worker_info, "junk", b"\xff{not json")
    status = frontier.status()
    (me,) = status["workers"]
    assert (me["id"], me["alive"], me["pages"], me["errors"], me["state"]) == \
        ("w1", True, 9, 3, "crawling")
    assert {g["id"]: g.get("pid") for g in status["gone_workers"]} == {"gone": 7, "junk": None}
    assert status["errors_by_kind"] == {"HTTP 404": 3, "DNSLookupError": 1}
    assert status["stats"]["errors"] == 3
    assert 0 <= me["last_heartbeat_s"] < 60 and status["now"] > 1_600_000_000  # seconds


def test_every_time_is_in_seconds_and_junk_stays_text(frontier, redis_client):
    redis_client.hset(frontier.keys.state, mapping={"finished_at": 1_700_000_123_456,
                                                    "idle_timeout": 30_000,
                                                    "idle_since": "soon"})
    state = frontier.status()["state"]
    assert state["finished_at"] == 1_700_000_123.456
    assert state["idle_timeout"] == 30.0
    assert state["idle_since"] == "soon"


def test_report_keys_of_the_wrong_type_are_replaced_and_counted(frontier, redis_client):
    redis_client.set(frontier.keys.error_kinds, "junk")
    redis_client.hset(frontier.keys.host_errors, "a.test", 1)  # a hash where a zset belongs
    redis_client.rpush(frontier.keys.worker_info, "junk")
    redis_client.set(frontier.keys.report_seq, "junk")
    assert frontier.status()["errors_by_kind"] == {}  # read as nothing, no traceback
    frontier.add_totals({"errors": 1}, kinds={"TimeoutError": 1}, hosts={"a.test": 1},
                        info=row(), seq=1)
    status = frontier.status()
    assert status["errors_by_kind"] == {"TimeoutError": 1}
    assert status["stats"]["corrupt"] == 4
    assert status["workers"][0]["state"] == "crawling"
    assert frontier.hosts()["most_errors"][0]["errors"] == 1


def test_hosts_busiest_slowest_and_most_failing(frontier, redis_client):
    pushes = [(fp(i), "big.test", 0, b"x") for i in range(5)]
    pushes += [(fp(10 + i), "small.test", 0, b"x") for i in range(2)]
    pushes += [(fp(20), "slow.test", 0, b"x")]
    frontier.flush(pushes)
    redis_client.hset(frontier.keys.slot_delay, "slow.test", 7000)
    now_ms = int(frontier.status()["now"] * 1000)
    redis_client.hset(frontier.keys.backoff, mapping={"small.test": f"2 {now_ms + 60_000}",
                                                      "big.test": "junk"})
    frontier.add_totals({"errors": 4}, hosts={"small.test": 3, "gone.test": 1})
    hosts = frontier.hosts(limit=2)
    assert [h["host"] for h in hosts["busiest"]] == ["big.test", "small.test"]
    assert hosts["busiest"][0]["queued"] == 5
    slowest = {h["host"]: h for h in hosts["slowest"]}
    assert set(slowest) == {"small.test", "slow.test"}
    assert slowest["slow.test"]["delay_s"] == 7.0
    assert 55 < slowest["small.test"]["backoff_s"] <= 60 and slowest["small.test"]["backoffs"] == 2
    assert [(h["host"], h["errors"]) for h in hosts["most_errors"]] == \
        [("small.test", 3), ("gone.test", 1)]
    assert hosts["hosts_with_queued_work"] == 3


def test_hosts_of_an_empty_crawl(frontier):
    assert frontier.hosts() == {"hosts_with_queued_work": 0, "sampled": 0, "busiest": [],
                                "slowest": [], "most_errors": []}


def test_rows_of_workers_that_left_are_bounded(frontier, redis_client):
    redis_client.hset(frontier.keys.worker_info,
                      mapping={f"gone-{i}": row(pid=i) for i in range(1000)})
    frontier.add_totals({}, info=row(pid=1))  # the 1001st row: the gone ones go
    status = frontier.status()
    assert [w["id"] for w in status["workers"]] == ["w1"] and status["workers"][0]["pid"] == 1
    assert status["gone_workers"] == []
    assert redis_client.hlen(frontier.keys.worker_info) == 1
