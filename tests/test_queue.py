"""RedisFrontier against a real Redis: order, dedupe, leases, politeness, the end."""

from __future__ import annotations

import time

import pytest

from conftest import fp, open_frontier
from scrapy_fleet.frontier.queue import RedisFrontier, ReportDelta


@pytest.fixture
def frontier(redis_client, redis_url, key_prefix) -> RedisFrontier:
    return open_frontier(redis_client, redis_url, key_prefix, concurrency_per_slot=100)


def ids(popped) -> list[bytes]:
    return [blob for _, blob in popped]


def test_priority_first_then_fifo_across_slots(frontier):
    frontier.flush([
        (fp(1), "a", 0, b"a0-first"),
        (fp(2), "b", 0, b"b0-second"),
        (fp(3), "a", 5, b"a5"),
        (fp(4), "c", -1, b"c-1"),
        (fp(5), "b", 5, b"b5"),
        (fp(6), "a", 0, b"a0-third"),
    ])
    popped = frontier.flush(pop=10).popped
    assert ids(popped) == [b"a5", b"b5", b"a0-first", b"b0-second", b"a0-third", b"c-1"]


def test_dedupe_is_part_of_the_push_and_dont_filter_bypasses_it(frontier):
    result = frontier.flush([
        (fp(1), "a", 0, b"one"),
        (fp(1), "a", 0, b"one again, same batch"),
        (b"", "a", 0, b"unfiltered"),
        (b"", "a", 0, b"unfiltered twice"),
    ])
    assert result.pushed == [True, False, True, True]
    assert frontier.flush([(fp(1), "a", 0, b"one, later")]).pushed == [False]
    assert len(frontier.flush(pop=10).popped) == 3
    stats = frontier.status()["stats"]
    assert stats["duplicate"] == 2 and stats["enqueued"] == 3
    assert frontier.status()["seen"] == 1  # counted by the script (seenset.py)


def test_pushes_acks_and_pop_share_one_round_trip(frontier, monkeypatch):
    frontier.flush([(fp(1), "a", 0, b"x")])
    lease = frontier.flush(pop=1).popped[0][0]
    calls = []
    original = frontier.client.connection_pool.get_connection

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(frontier.client.connection_pool, "get_connection", counting)
    result = frontier.flush([(fp(2), "a", 0, b"y"), (fp(3), "b", 0, b"z")], acks=[lease], pop=5)
    assert len(calls) == 1
    assert ids(result.popped) == [b"y", b"z"]
    assert frontier.status()["stats"]["acked"] == 1


def test_gauges_follow_every_state_change(frontier):
    frontier.flush([(fp(i), "a", 0, b"x") for i in range(5)])
    popped = frontier.flush(pop=3).popped
    assert (frontier.status()["stats"]["pending"], frontier.status()["stats"]["leased"]) == (2, 3)
    frontier.flush(acks=[popped[0][0]])
    frontier.requeue([popped[1][0]])
    stats = frontier.status()["stats"]
    assert (stats["pending"], stats["leased"], stats["acked"], stats["requeued"]) == (3, 1, 1, 1)
    # acks are idempotent
    frontier.flush(acks=[popped[0][0]])
    assert frontier.status()["stats"]["acked"] == 1


def test_in_flight_cap_per_slot_is_fleet_wide(redis_client, redis_url, key_prefix):
    one = open_frontier(redis_client, redis_url, key_prefix, "w1", concurrency_per_slot=2)
    two = open_frontier(redis_client, redis_url, key_prefix, "w2", concurrency_per_slot=2)
    one.flush([(fp(i), "slow.example", 0, b"s") for i in range(5)] + [(fp(9), "other", 0, b"o")])
    first = one.flush(pop=1).popped
    assert ids(two.flush(pop=10).popped) == [b"s", b"o"]  # no third "slow" request
    assert two.flush(pop=10).popped == []
    one.flush(acks=[first[0][0]])
    assert ids(two.flush(pop=10).popped) == [b"s"]


def test_download_delay_spaces_pops_of_a_slot_for_all_workers(redis_client, redis_url, key_prefix):
    one = open_frontier(redis_client, redis_url, key_prefix, "w1", download_delay=0.3)
    two = open_frontier(redis_client, redis_url, key_prefix, "w2", download_delay=0.3)
    one.flush([(fp(i), "polite", 0, b"p") for i in range(3)] + [(fp(9), "other", 0, b"o")])
    assert ids(one.flush(pop=10).popped) == [b"p", b"o"]  # one per slot per delay
    empty = two.flush(pop=10)
    assert empty.popped == [] and 0 < empty.next_due <= 0.3  # when to ask again
    started = time.monotonic()
    times = []
    while len(times) < 2:
        if two.flush(pop=10).popped:
            times.append(time.monotonic())
        time.sleep(0.01)
    assert times[0] - started >= 0.25
    assert times[1] - times[0] >= 0.25


def test_dead_workers_leases_are_reclaimed(redis_client, redis_url, key_prefix):
    dead = open_frontier(redis_client, redis_url, key_prefix, "dead", lease_timeout=0.2)
    alive = open_frontier(redis_client, redis_url, key_prefix, "alive", lease_timeout=0.2)
    dead.flush([(fp(i), "a", 0, bytes([i])) for i in range(3)])
    assert len(dead.flush(pop=3).popped) == 3
    assert alive.flush(pop=3).popped == []

    reclaimed: list = []
    deadline = time.monotonic() + 10
    while not reclaimed and time.monotonic() < deadline:
        alive.heartbeat()
        reclaimed = alive.reclaim()
        time.sleep(0.05)
    assert reclaimed == [("dead", 3)]
    assert sorted(ids(alive.flush(pop=5).popped)) == [b"\x00", b"\x01", b"\x02"]
    # the dead worker's late ack of a reclaimed request changes nothing
    assert alive.status()["stats"]["leased"] == 3


def test_finished_only_when_empty_idle_and_seeded(redis_client, redis_url, key_prefix):
    seeder = open_frontier(redis_client, redis_url, key_prefix, "seeder")
    worker = open_frontier(redis_client, redis_url, key_prefix, "worker")
    seeder.set_seeding(True)
    assert not worker.check_finished().finished  # a live seeder, nothing fed yet
    seeder.flush([(fp(1), "a", 0, b"x")])
    seeder.set_seeding(False)
    check = worker.check_finished()
    assert not check.finished and check.pending == 1
    lease = worker.flush(pop=1).popped[0][0]
    assert not seeder.check_finished().finished  # leased by a live worker
    assert not worker.check_finished(keep_alive=True).finished
    worker.flush(acks=[lease])
    assert not worker.check_finished(keep_alive=True).finished  # keep-alive never ends
    assert worker.check_finished().finished
    assert seeder.check_finished().finished  # everyone sees it
    assert worker.status()["state"]["status"] == "done"


def test_a_keep_alive_crawl_is_kept_alive_for_every_worker(redis_client, redis_url, key_prefix):
    """A worker that is not keep-alive itself never ends a crawl that another worker made
    keep-alive: the mode is the crawl's (``state.keep_alive``), not the caller's."""
    keeper = open_frontier(redis_client, redis_url, key_prefix, "keeper")
    keeper.open(fresh=False, keep_alive=True)
    plain = open_frontier(redis_client, redis_url, key_prefix, "plain")
    plain.set_seeding(False)
    assert keeper.crawl_settings() == (True, 0.0)
    assert not plain.check_finished().finished
    assert plain.status()["state"]["status"] == "running"


def test_the_idle_timeout_ends_a_keep_alive_crawl_after_idle_time(redis_client, redis_url, key_prefix):
    worker = open_frontier(redis_client, redis_url, key_prefix, "w1")
    worker.open(fresh=False, keep_alive=True, idle_timeout=0.3)
    worker.set_seeding(False)
    assert not worker.check_finished().finished  # idle from now on: the clock starts
    since = redis_client.hget(worker.keys.state, "idle_since")
    assert since is not None
    worker.flush([(fp(1), "a", 0, b"x")])  # new work: not idle any more
    assert redis_client.hget(worker.keys.state, "idle_since") is None
    lease = worker.flush(pop=1).popped[0][0]
    assert not worker.check_finished().finished  # leased: busy
    worker.flush(acks=[lease])
    assert not worker.check_finished().finished  # idle again: the clock restarts
    time.sleep(0.35)  # the timeout runs on Redis's clock: nothing here to await
    assert worker.check_finished().finished
    assert worker.status()["state"]["ended_by"] == "idle_timeout"


def test_a_fed_crawl_waits_out_a_dead_workers_start_batch(redis_client, redis_url, key_prefix):
    """A crawl fed from start keys does not end while a worker that may hold a batch of
    start entries is dead and unreclaimed, nor until a lease after the last reclaim (its
    batch's lease, which can end a heartbeat later): those entries are in no queue."""
    live = open_frontier(redis_client, redis_url, key_prefix, "live", lease_timeout=0.3)
    live.open(fresh=False, feeds=True)
    dead = open_frontier(redis_client, redis_url, key_prefix, "dead", lease_timeout=0.3)
    live.set_seeding(False)
    time.sleep(0.35)  # "dead" stops heartbeating (server time: nothing to await)
    live.heartbeat()
    assert not live.check_finished().finished  # dead, not reclaimed: may hold a batch
    assert [w for w, _ in live.reclaim()] == ["dead"]
    assert not live.check_finished().finished  # its batch's lease may still run
    time.sleep(0.35)
    live.heartbeat()
    assert live.check_finished().finished
    del dead


def test_the_status_says_why_queued_work_cannot_be_leased(redis_client, redis_url, key_prefix):
    worker = open_frontier(redis_client, redis_url, key_prefix, "w1", concurrency_per_slot=1,
                           download_delay=30)
    worker.flush([(fp(1), "a", 0, b"x"), (fp(2), "a", 0, b"y"), (fp(3), "b", 0, b"z")])
    assert worker.status()["waiting"] is None  # leasable now
    assert len(worker.flush(pop=10).popped) == 2  # one of a (at its cap of 1), one of b
    worker.flush([(fp(4), "b", 0, b"w")])
    waiting = worker.status()["waiting"]
    assert waiting == {"capped_hosts": 2, "delayed_hosts": 0, "cap": 1}


def test_a_finished_crawl_takes_no_more_pushes(redis_client, redis_url, key_prefix):
    """Pushed into a crawl that ended they would never run: nothing is stored, the caller
    is told (the feeder gives its entries back, a producer starts a new crawl)."""
    worker = open_frontier(redis_client, redis_url, key_prefix, "w1")
    worker.set_seeding(False)
    assert worker.check_finished().finished
    result = worker.flush([(fp(1), "a", 0, b"x")])
    assert result.finished and result.pushed == [False]
    assert worker.status()["stats"].get("pending", 0) == 0
    assert worker.attach("owner") == "restarted"
    assert worker.flush([(fp(1), "a", 0, b"x")]).pushed == [True]


def test_a_finished_crawl_starts_afresh_and_fresh_wipes(redis_client, redis_url, key_prefix):
    first = open_frontier(redis_client, redis_url, key_prefix, "w1")
    first.flush([(fp(1), "a", 0, b"x")])
    assert first.open(fresh=False) == "resumed"
    assert first.open(fresh=True) == "fresh"
    assert first.status()["seen"] == 0
    first.set_seeding(False)
    assert first.check_finished().finished
    assert first.open(fresh=False) == "fresh"  # done -> a new crawl
    assert first.flush([(fp(1), "a", 0, b"x")]).pushed == [True]


def test_scripts_lost_by_the_server_are_reloaded(frontier):
    frontier.flush([(fp(1), "a", 0, b"x")])
    frontier.client.script_flush()  # what a restarted server looks like
    result = frontier.flush([(fp(2), "a", 0, b"y")], pop=5)
    assert sorted(ids(result.popped)) == [b"x", b"y"]
    stats = frontier.status()["stats"]
    assert (stats["pending"], stats["leased"], stats["enqueued"]) == (0, 2, 2)


def test_big_batches_are_chunked(redis_client, redis_url, key_prefix):
    frontier = open_frontier(redis_client, redis_url, key_prefix, concurrency_per_slot=10_000)
    entries = [(fp(i), f"host{i % 7}", 0, b"x") for i in range(9000)]
    assert all(frontier.flush(entries).pushed)
    popped = frontier.flush(pop=9000).popped
    assert len(popped) == 9000
    assert frontier.flush(acks=[i for i, _ in popped]).pushed == []
    assert frontier.status()["stats"]["acked"] == 9000


def test_a_huge_backlog_of_pushes_goes_in_calls_redis_accepts(frontier, monkeypatch):
    from scrapy_fleet.frontier import queue

    monkeypatch.setattr(queue, "MAX_CALL_BYTES", 1000)  # a small call limit, same logic
    pushes = [(fp(i), "a", 0, b"x" * 300) for i in range(10)] + [(fp(1), "a", 0, b"dup")]
    first = frontier.flush(pushes[:1], pop=1)
    result = frontier.flush(pushes[1:], acks=[first.popped[0][0]], pop=20)
    assert result.pushed == [True] * 9 + [False]
    assert len(result.popped) == 9
    stats = frontier.status()["stats"]
    assert stats["acked"] == 1 and stats["enqueued"] == 10 and stats["pending"] == 0


def test_a_worker_records_how_it_ended_and_junk_outcomes_are_skipped(frontier):
    frontier.record_outcome({"reason": "finished", "pages": 3, "error": None})
    frontier.client.hset(frontier.keys.outcomes, "junk", b"\xff not json")
    assert frontier.outcomes() == {"w1": {"reason": "finished", "pages": 3, "error": None}}


@pytest.mark.slow  # a redis-server of its own, stopped and started
def test_on_the_reactor_an_outage_never_sleeps_and_ends_at_the_deadline(own_redis, key_prefix):
    """wait=False (the scheduler's calls): no sleep, RedisRetryLater until the deadline of
    the outage (not of one call), then RedisUnavailable for every caller until Redis is back."""
    from scrapy_fleet.frontier.queue import RedisRetryLater
    from scrapy_fleet.redis_server import RedisUnavailable, connect

    frontier = open_frontier(connect(own_redis.url), own_redis.url, key_prefix, retry_timeout=0.3)
    own_redis.stop()
    with pytest.raises(RedisRetryLater) as later:
        frontier.flush(pop=1, wait=False)
    assert 0 < later.value.pause <= 1.0
    time.sleep(0.35)  # past the outage's deadline (the thing under test is a deadline)
    with pytest.raises(RedisUnavailable):
        frontier.flush(pop=1, wait=False)
    with pytest.raises(RedisUnavailable):  # a blocking caller gives up too, without waiting
        frontier.heartbeat()
    own_redis.start()
    assert frontier.flush(pop=1, wait=False).popped == []


def test_leaving_hands_back_every_lease_and_deregisters(frontier):
    frontier.flush([(fp(i), "a", 0, b"x") for i in range(3)])
    assert len(frontier.flush(pop=3).popped) == 3
    assert frontier.leave() == 3
    status = frontier.status()
    assert status["stats"]["pending"] == 3 and status["stats"]["leased"] == 0
    assert status["workers"] == []


@pytest.mark.parametrize("junk", ["1.5", "abc", "007", "-0", "+3", " 4", "99999999999999999999",
                                  "9223372036854775807"])
def test_a_junk_counter_is_reset_and_counted_never_a_failed_flush(frontier, redis_client, junk):
    # another tool wrote it: not a number, a number Redis does not parse as an integer
    # ("007", "-0", "+3"), or one the next HINCRBY would overflow
    redis_client.hset(frontier.keys.stats, mapping={"enqueued": junk, "duplicate": junk})
    result = frontier.flush([(fp(1), "a", 0, b"one"), (fp(1), "a", 0, b"again")], pop=1)
    assert result.pushed == [True, False] and len(result.popped) == 1
    stats = redis_client.hgetall(frontier.keys.stats)
    assert int(stats[b"enqueued"]) == 1 and int(stats[b"duplicate"]) == 1
    assert int(stats[b"corrupt"]) == 2
    assert (int(stats[b"pending"]), int(stats[b"leased"])) == (0, 1)


def test_totals_add_up_and_a_junk_total_starts_over(frontier, redis_client, caplog):
    frontier.add_totals({"pages": 3, "items": 0, "errors": 1})
    frontier.add_totals({"pages": 2})
    redis_client.hset(frontier.keys.stats, "errors", "lots")  # another tool's junk
    frontier.add_totals({"errors": 4})
    stats = frontier.status()["stats"]
    assert (stats["pages"], stats["errors"], stats["corrupt"]) == (5, 4, 1)
    assert "items" not in stats  # zero deltas are not sent
    assert "1 crawl totals in Redis held junk; reset" in caplog.text


def test_a_report_rides_with_the_acks_it_counts(frontier):
    """One round trip: the worker's report first, then the acks; sent again (its answer
    lost) it is added once, and the acks are not repeated."""
    frontier.flush([(fp(n), "h", 0, b"r%d" % n) for n in range(3)])
    leases = [lease for lease, _ in frontier.flush(pop=3).popped]
    report = ReportDelta({"pages": 3, "items": 2}, {"HTTP 404": 1}, {"h": 1}, "", seq=1)
    result = frontier.flush(acks=leases, report=report)
    assert result.reported
    assert frontier.flush(acks=leases, report=report).reported  # taken before: still "in Redis"
    status = frontier.status()
    assert status["stats"]["acked"] == 3 and status["stats"]["pages"] == 3
    assert status["stats"]["items"] == 2 and status["errors_by_kind"] == {"HTTP 404": 1}


def test_a_report_whose_script_is_not_loaded_loses_no_lease(frontier, redis_client):
    """The server lost its scripts but the flush's (another worker loaded it again): the
    pop's leases come back all the same (never leased twice), and the report goes too."""
    frontier.flush([(fp(n), "h", 0, b"r%d" % n) for n in range(3)])
    redis_client.script_flush()
    redis_client.script_load(frontier._scripts["FLUSH"].script)
    report = ReportDelta({"pages": 1}, {}, {}, "", seq=1)
    result = frontier.flush(pop=3, report=report)
    assert len(result.popped) == 3 and result.reported
    assert redis_client.hlen(frontier.keys.lease(frontier.worker_id)) == 3
    assert frontier.status()["stats"]["pages"] == 1


def test_a_report_sent_again_under_its_number_is_added_once(frontier):
    assert frontier.add_totals({"pages": 3}, kinds={"HTTP 404": 1}, seq=1)
    # the answer was lost with the connection: the worker sends the same report again
    assert not frontier.add_totals({"pages": 3}, kinds={"HTTP 404": 1}, seq=1)
    assert frontier.add_totals({"pages": 2}, seq=2)
    status = frontier.status()
    assert status["stats"]["pages"] == 5 and status["errors_by_kind"] == {"HTTP 404": 1}


def test_a_pop_leases_from_the_queues_it_names_and_learns_the_others(
        redis_client, redis_url, key_prefix, monkeypatch):
    """Every key a script touches is in KEYS (scripts.py): a pop names the queues it may
    lease from, the ready slots its previous answer listed. A worker that knows none asks
    again at once, naming those its first answer listed; once it knows them, one round trip."""
    producer = open_frontier(redis_client, redis_url, key_prefix, "producer")
    producer.flush([(fp(i), f"host{i}.test", 0, f"r{i}".encode()) for i in range(80)])
    worker = open_frontier(redis_client, redis_url, key_prefix, "worker")
    scripts = []
    original = worker._script

    def counting(name, *args, **kwargs):
        scripts.append((name, len(kwargs.get("queues", ()))))
        return original(name, *args, **kwargs)

    monkeypatch.setattr(worker, "_script", counting)
    first = worker.flush(pop=16)
    assert len(first.popped) == 16
    assert scripts == [("FLUSH", 0), ("FLUSH", 32)]  # knew none; then the 32 best it learnt
    scripts.clear()
    second = worker.flush(acks=[lease for lease, _ in first.popped], pop=16)
    assert len(second.popped) == 16 and scripts == [("FLUSH", 32)]
    # in priority order as ever, across the slots it named
    assert ids(first.popped + second.popped) == [f"r{i}".encode() for i in range(32)]


def test_a_crawl_made_before_heads_has_its_queues_recorded_when_opened(
        redis_client, redis_url, key_prefix):
    old = open_frontier(redis_client, redis_url, key_prefix, "old", concurrency_per_slot=1)
    old.flush([(fp(i), f"host{i % 3}.test", 0, b"x") for i in range(9)])
    held = old.flush(pop=1).popped  # host0: in flight at its cap, in neither ready nor delayed
    keys = old.keys
    seconds, micros = redis_client.time()
    redis_client.zrem(keys.ready, "host1.test")  # host1: waiting out a delay of 0.2 s
    redis_client.zadd(keys.delayed, {"host1.test": seconds * 1000 + micros // 1000 + 200})
    redis_client.delete(keys.heads)  # as an older version left it: no heads
    redis_client.hdel(keys.state, "heads")
    new = open_frontier(redis_client, redis_url, key_prefix, "new", concurrency_per_slot=1)
    assert redis_client.hget(keys.state, "heads") == b"1"
    assert redis_client.hlen(keys.heads) == 3
    old.flush(acks=[held[0][0]])  # host0 below its cap again: scheduled from heads
    leased = 1
    deadline = time.monotonic() + 10
    while leased < 9 and time.monotonic() < deadline:
        popped = new.flush(pop=10).popped
        leased += len(popped)
        new.flush(acks=[lease for lease, _ in popped])
        if not popped:
            time.sleep(0.05)  # host1's delay: nothing to await
    assert leased == 9
    new.set_seeding(False)
    assert new.check_finished().finished


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_dead_worker_whose_id_is_not_utf8_is_reclaimed_and_the_crawl_ends(
        redis_client, redis_url, key_prefix, partitions):
    """Worker ids are read as bytes and name their lease keys byte for byte: a junk id
    (not UTF-8) holding a lease is reclaimed and forgotten, not left to hold the crawl open."""
    worker = open_frontier(redis_client, redis_url, key_prefix, "w1", partitions=partitions,
                           lease_timeout=0.3)
    worker.set_seeding(True)
    worker.flush([(fp(1), "a.test", 0, b"one")])
    worker.set_seeding(False)
    (lease, blob), = worker.flush(pop=1).popped
    raw = lease.rpartition(":")[2] if partitions > 1 else lease
    part = worker.part_of("a.test")
    junk = b"\xff\xfejunk"
    # the lease moves to a worker whose id is junk, dead (its heartbeat long ago)
    entry = redis_client.hget(part.lease("w1"), raw)
    redis_client.hdel(part.lease("w1"), raw)
    redis_client.hset(part.lease(junk), raw, entry)
    redis_client.zadd(worker.keys.workers, {junk: 1})
    assert [n for _, n in worker.reclaim()] == [1]
    assert redis_client.zscore(worker.keys.workers, junk) is None
    (_, again), = worker.flush(pop=1).popped
    assert again == blob
    worker.flush(acks=[lease.rpartition(":")[0] + ":" + raw if partitions > 1 else raw])
    assert worker.check_finished().finished
