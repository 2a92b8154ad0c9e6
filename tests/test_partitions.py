"""A crawl split into partitions (scrapy_fleet/frontier/partitions.py) on one plain Redis:
the same layout a Redis Cluster spreads over its masters (tests/test_cluster.py)."""

from __future__ import annotations

import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from redis.connection import AbstractConnection
from redis.crc import key_slot

from cluster import cluster_ports
from conftest import crawl_hosts, fp, frontier as view, open_frontier, wait_for
from scrapy_fleet.frontier.keys import CrawlKeys, partition_tags
from scrapy_fleet.frontier.partitions import LOCK_MS
from scrapy_fleet.frontier.queue import CrawlLost, RedisRetryLater
from scrapy_fleet.redis_server import RedisUnavailable, find_redis_server

HOSTS = [f"host{n}.example" for n in range(40)]


def split(redis_client, redis_url, key_prefix, worker="w1", partitions=4, **kwargs):
    frontier = open_frontier(redis_client, redis_url, key_prefix, worker, partitions=partitions,
                             **kwargs)
    assert len(frontier.parts) == partitions and frontier.split is not None
    return frontier


def push(frontier, numbers, priority=0):
    return frontier.flush([(fp(n), HOSTS[n % len(HOSTS)], priority, b"r%d" % n) for n in numbers])


def drain(frontier, batch=50):
    """Lease and acknowledge until nothing is left; the payloads leased, in order."""
    got = []
    for _ in range(200):
        popped = frontier.flush(pop=batch).popped
        if not popped and frontier.check_finished().finished:
            return got
        got += [blob for _, blob in popped]
        frontier.flush(acks=[lease for lease, _ in popped])
    raise AssertionError("the crawl never ended")


def test_partition_tags_spread_evenly_over_the_slot_range():
    for count in (2, 3, 16, 64):
        tags = partition_tags("alexa", count)
        slots = [key_slot(tag.encode()) for tag in tags]
        for i, slot in enumerate(slots):  # partition i in the i-th 1/count of the slots
            assert i * 16384 // count <= slot < (i + 1) * 16384 // count
    keys = CrawlKeys("fleet", "alexa")
    assert keys.partitions(1) == [keys]  # one partition: the layout of every older crawl
    parts = keys.partitions(16)
    assert all(keys.in_partition(p.ready) for p in parts) and not keys.in_partition(keys.ready)
    assert not CrawlKeys("fleet", "alexa#0").in_partition(keys.ready)
    # every partition count splits download slots the same way in every process
    assert [CrawlKeys.partition_of(h, 16) for h in HOSTS[:4]] == [
        zlib.crc32(h.encode()) % 16 for h in HOSTS[:4]]


def test_requests_spread_over_partitions_and_all_come_back_once(redis_client, redis_url, key_prefix):
    frontier = split(redis_client, redis_url, key_prefix, concurrency_per_slot=100)
    frontier.set_seeding(True)
    result = push(frontier, [*range(200), *range(50)])  # 50 duplicates
    assert sum(result.pushed) == 200
    frontier.set_seeding(False)
    counts = [redis_client.hget(p.stats, "pending") for p in frontier.parts]
    assert all(int(c) > 0 for c in counts) and sum(map(int, counts)) == 200
    assert frontier.status()["stats"]["pending"] == 200
    assert frontier.status()["partitions"] == 4
    got = drain(frontier)
    assert sorted(got) == sorted(b"r%d" % n for n in range(200))  # each once
    status = frontier.status()
    assert status["stats"]["acked"] == 200 and status["stats"]["duplicate"] == 50
    assert status["state"]["status"] == "done" and status["seen"] == 200
    # a finished split crawl refuses pushes, as an unsplit one does
    assert push(frontier, [500]).finished
    assert all(redis_client.hget(p.state, "status") == b"done" for p in frontier.parts)


def test_a_dead_workers_leases_in_every_partition_are_reclaimed(redis_client, redis_url, key_prefix):
    dead = split(redis_client, redis_url, key_prefix, "dead", lease_timeout=0.2,
                 concurrency_per_slot=100)
    alive = split(redis_client, redis_url, key_prefix, "alive", lease_timeout=0.2,
                  concurrency_per_slot=100)
    dead.set_seeding(True)
    push(dead, range(40))
    dead.set_seeding(False)
    leased = dead.flush(pop=40).popped
    while len(leased) < 40:
        leased += dead.flush(pop=40).popped
    assert len({lease.split(":")[0] for lease, _ in leased}) == 4  # from every partition
    assert not alive.check_finished().finished
    time.sleep(0.3)  # the dead worker's heartbeat is older than its lease timeout
    alive.heartbeat()
    assert alive.reclaim() == [("dead", 40)]
    assert [w["id"] for w in alive.status()["workers"]] == ["alive"]
    assert sorted(drain(alive)) == sorted(b"r%d" % n for n in range(40))
    assert alive.status()["stats"]["reclaimed"] == 40


def test_the_end_is_not_declared_while_any_partition_has_work(redis_client, redis_url, key_prefix):
    frontier = split(redis_client, redis_url, key_prefix)
    frontier.set_seeding(True)
    frontier.set_seeding(False)
    push(frontier, [7])
    assert not frontier.check_finished().finished  # queued in one partition
    (lease, _), = frontier.flush(pop=1).popped
    assert not frontier.check_finished().finished  # leased
    # no partition is left sealed by a check that found work: pushes go in
    assert all(redis_client.hget(p.state, "sealed") is None for p in frontier.parts)
    frontier.flush([(fp(8), HOSTS[8], 0, b"r8")], acks=[lease])
    assert not frontier.check_finished().finished
    assert drain(frontier) == [b"r8"]


def test_a_sealed_partition_holds_pushes_until_the_check_ends(redis_client, redis_url, key_prefix):
    """A checker killed after sealing: pushes wait for the seal to end, nothing is lost."""
    frontier = split(redis_client, redis_url, key_prefix, partitions=2, retry_timeout=1)
    frontier.set_seeding(True)
    frontier.set_seeding(False)
    part = frontier.part_of(HOSTS[3])
    now = redis_client.time()
    until = now[0] * 1000 + now[1] // 1000 + 300
    redis_client.hset(part.state, "sealed", f"tok {until}")
    result = push(frontier, [3])  # waits out the seal (wait=True), then stores it
    assert result.pushed == [True]
    assert drain(frontier) == [b"r3"]
    assert 2 * LOCK_MS / 1000 < 60  # a killed checker's seals end within a minute


def test_a_flush_over_many_partitions_takes_two_round_trips(redis_client, redis_url, key_prefix,
                                                            monkeypatch):
    """Pushes to every partition in one pipeline, then the acks with the pop in another."""
    frontier = split(redis_client, redis_url, key_prefix, partitions=8)
    frontier.set_seeding(True)
    push(frontier, range(40))  # every partition's seen-set read once
    leases = [lease for lease, _ in frontier.flush(pop=8).popped]
    assert len({lease.split(":")[0] for lease in leases}) > 1  # acks for several partitions
    batch = [(fp(n), HOSTS[n % len(HOSTS)], 0, b"r%d" % n) for n in range(100, 140)]
    assert len({frontier.part_of(slot).state for _, slot, _, _ in batch}) == 8
    sends = []
    send = AbstractConnection.send_packed_command

    def counted(self, *args, **kwargs):
        sends.append(1)
        return send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    result = frontier.flush(batch, acks=leases, pop=1)
    monkeypatch.undo()
    assert all(result.pushed) and len(result.popped) == 1
    assert len(sends) == 2
    assert frontier.status()["stats"]["acked"] == 8


def test_a_flush_retried_after_one_partition_refused_stores_each_push_once(
        redis_client, redis_url, key_prefix):
    """The partitions that took their pushes are not sent them again: a dont_filter
    request is queued once, the worker's counters are counted once."""
    frontier = split(redis_client, redis_url, key_prefix)
    frontier.set_seeding(True)
    entries = [(b"", HOSTS[n], 0, b"u%d" % n) for n in range(8)]  # dont_filter: never deduped
    sealed = frontier.part_of(HOSTS[3])
    assert len({frontier.part_of(slot).state for _, slot, _, _ in entries}) > 1
    redis_client.hset(sealed.state, "sealed", f"tok {int(time.time() * 1000) + 60_000}")
    with pytest.raises(RedisRetryLater):
        frontier.flush(entries, wait=False, feed_bad=2, duplicates=3)
    redis_client.hdel(sealed.state, "sealed")
    assert frontier.flush(entries, wait=False, feed_bad=2, duplicates=3).pushed == [True] * 8
    frontier.set_seeding(False)
    assert sorted(drain(frontier)) == sorted(b"u%d" % n for n in range(8))
    stats = frontier.status()["stats"]
    assert stats["feed_bad"] == 2 and stats["duplicate"] == 3


@pytest.fixture
def master_and_replica(tmp_path: Path):
    """A redis-server and a replica of it (TCP, no persistence): their ports and the
    replica's process."""
    master, replica = cluster_ports(2)
    procs = []
    for port, extra in ((master, []), (replica, ["--replicaof", "127.0.0.1", str(master)])):
        directory = tmp_path / str(port)
        directory.mkdir()
        procs.append(subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), *extra], stdout=subprocess.DEVNULL))
    try:
        import redis

        def linked() -> bool:
            try:
                return redis.Redis(port=replica).info("replication").get("master_link_status") == "up"
            except redis.ConnectionError:
                return False

        wait_for(linked, what="the replica to follow its master")
        yield master, replica, procs[1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait()


def test_with_wait_replicas_no_ack_goes_out_before_a_replica_holds_the_pushes(
        master_and_replica, key_prefix):
    """FLEET_WAIT_REPLICAS: a failover cannot keep a request's ack and lose its children."""
    import redis

    master, replica, replica_proc = master_and_replica
    url = f"redis://127.0.0.1:{master}/0"
    frontier = split(redis.Redis(port=master), url, key_prefix, wait_replicas=1, retry_timeout=2)
    frontier.set_seeding(True)
    push(frontier, range(8))
    frontier.set_seeding(False)
    popped = frontier.flush(pop=4).popped
    leases = [lease for lease, _ in popped]
    children = [(fp(n), HOSTS[n % len(HOSTS)], 0, b"r%d" % n) for n in range(100, 108)]
    replica_proc.send_signal(signal.SIGSTOP)  # a replica that holds nothing new
    try:
        with pytest.raises(RedisRetryLater):
            frontier.flush(children, acks=leases, wait=False)
        assert frontier.status()["stats"]["leased"] == 4  # the acks did not go out
        with pytest.raises(RedisUnavailable, match="FLEET_WAIT_REPLICAS"):
            frontier.flush(children, acks=leases)  # still behind past the retry deadline
    finally:
        replica_proc.send_signal(signal.SIGCONT)
    result = frontier.flush(children, acks=leases)  # each push sent once (carried)
    assert result.pushed == [True] * 8
    copy = view(f"redis://127.0.0.1:{replica}/0", key_prefix, "spider").status()
    assert copy["stats"]["pending"] == 12  # the children were there before the acks
    rest = {b"r%d" % n for n in range(8)} - {blob for _, blob in popped}
    assert sorted(drain(frontier)) == sorted([*rest, *(b"r%d" % n for n in range(100, 108))])


def test_junk_lease_ids_and_a_lost_partition(redis_client, redis_url, key_prefix):
    frontier = split(redis_client, redis_url, key_prefix)
    frontier.set_seeding(True)
    push(frontier, [1, 2])
    assert frontier.flush(acks=["junk", "9:1", "x:1"]).pushed == []  # ignored, no crash
    redis_client.delete(frontier.parts[2].state)  # a master lost the partition's data
    with pytest.raises(CrawlLost, match="partition 2"):
        frontier.check_finished()


def test_a_fleet_crawl_over_many_hosts_split_in_partitions(tmp_path: Path, fleet_settings, redis_url,
                                                           key_prefix):
    crawl_hosts(tmp_path, {**fleet_settings, "FLEET_PARTITIONS": "8", "CONCURRENT_REQUESTS": "8"},
                hosts=12, pages=12)
    status = view(redis_url, key_prefix, "links").status()
    assert status["partitions"] == 8 and status["stats"]["pending"] == 0
    assert status["stats"]["acked"] == status["stats"]["enqueued"] == 12 * 12 + 1
