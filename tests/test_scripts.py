"""Every Lua script declares every key it touches in KEYS (scripts.py, partition_scripts.py,
politeness/store.py), as Redis Cluster and the Redis docs require.

Checked on a real Redis by MONITOR: its log shows each command a script runs right after
the script's own EVALSHA line, and ``COMMAND GETKEYS`` says which keys a command names.
The workload goes through every script: pushes, pops, acks, junk, requeues, a dead
worker reclaimed, a worker leaving, orphaned leases, junk gauges, a crawl made before
``heads``, politeness, robots.txt, pruning, reports and the end of the crawl.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from conftest import fp, open_frontier
from scrapy_fleet.frontier.queue import RedisFrontier
from scrapy_fleet.politeness.store import PolitenessStore

_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b",
            b'"': b'"', b"\\": b"\\"}


def _unescape(raw: bytes) -> bytes:
    """An argument as MONITOR prints it (sdscatrepr), back to its bytes."""
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i:i + 1] == b"\\":
            nxt = raw[i + 1:i + 2]
            if nxt == b"x":
                out += bytes([int(raw[i + 2:i + 4], 16)])
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out += raw[i:i + 1]
        i += 1
    return bytes(out)


def parse(line: bytes) -> tuple[bool, list[bytes]]:
    """(whether a script ran it, its arguments) of a MONITOR line."""
    head, _, rest = line.partition(b"] ")
    return head.endswith(b" lua"), [_unescape(m) for m in _ARG.findall(rest)]


class Monitor:
    """MONITOR on its own connection, read by a thread until :meth:`stop`."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.conn = self.client.connection_pool.make_connection()
        self.conn.send_command("MONITOR")
        assert self.conn.read_response() == b"OK"
        self.lines: list[bytes] = []
        self.end = f"monitor-end-{uuid.uuid4().hex}".encode()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            line = self.conn.read_response()
            if self.end in line:
                return
            self.lines.append(line)

    def stop(self) -> list[bytes]:
        self.client.echo(self.end)
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.conn.disconnect()
        return self.lines


def undeclared(client: redis.Redis, lines: list[bytes]) -> tuple[int, list[str]]:
    """(script runs seen, a description of each key a script touched without declaring
    it, and of each SCAN or KEYS a script ran)."""
    runs: list[tuple[set[bytes], list[list[bytes]]]] = []
    for line in lines:
        by_script, args = parse(line)
        if not by_script:
            if args and args[0].upper() in (b"EVALSHA", b"EVAL"):
                runs.append(({*args[3:3 + int(args[2])]}, []))
            else:
                runs.append((set(), []))  # no script: commands after it would be a bug
            continue
        runs[-1][1].append(args)
    distinct = list(dict.fromkeys(tuple(c) for _, calls in runs for c in calls))
    client = redis.Redis(connection_pool=client.connection_pool)
    client.set_response_callback("COMMAND", lambda answer, **_: answer)  # GETKEYS: a list
    pipe = client.pipeline(transaction=False)
    for command in distinct:
        pipe.execute_command("COMMAND", "GETKEYS", *command)
    keys_of: dict[tuple[bytes, ...], list[bytes]] = {}
    for command, answer in zip(distinct, pipe.execute(raise_on_error=False)):
        if isinstance(answer, redis.ResponseError):
            assert "key" in str(answer).lower(), (command, answer)  # a command without keys
            answer = []
        keys_of[command] = answer
    problems = []
    scripts = 0
    for declared, calls in runs:
        scripts += bool(calls)
        for command in calls:
            name = command[0].upper()
            if name in (b"SCAN", b"KEYS"):
                problems.append(f"a script ran {name.decode()}")
            for key in keys_of[tuple(command)]:
                if key not in declared:
                    problems.append(f"{name.decode()} {key!r} not in KEYS {sorted(declared)[:8]}")
    return scripts, problems


def exercise(client: redis.Redis, url: str, key_prefix: str, partitions: int) -> None:
    """A crawl's life through the frontier's API: every script, most of their branches."""
    dupefilter = "bloom" if partitions > 1 else "exact"
    w1 = open_frontier(client, url, key_prefix, "w1", partitions=partitions, download_delay=0.05,
                       concurrency_per_slot=2, dupefilter=dupefilter, bloom_capacity=1000)
    w1.set_seeding(True)
    slots = [f"host{i}.test" for i in range(8)]
    pushes = [(fp(n), slots[n % 8], n % 3, f"payload {n}".encode()) for n in range(48)]
    pushes.append((b"", slots[0], 0, b"not filtered"))
    assert all(w1.flush(pushes).pushed)
    assert not any(w1.flush(pushes[:4]).pushed[:4])  # duplicates
    w1.set_seeding(False)
    popped = w1.flush(pop=6).popped
    w1.flush(acks=[popped[0][0]], invalid=[popped[1][0]], pop=4,
             held={i for i, _ in popped[2:]})
    w1.requeue([popped[2][0], popped[3][0]])
    # junk in a queue and in the gauges: dropped, recounted
    part = w1.part_of(slots[5])
    client.zadd(part.queue(slots[5]), {b"junk": -1e15})
    client.hset(part.stats, "pending", "junk")
    w1.flush(pushes=[(fp(1000), slots[5], 0, b"x")], pop=2)
    # a worker that dies holding leases, reclaimed; one that leaves
    w2 = open_frontier(client, url, key_prefix, "w2")
    w2.flush(pop=3)
    w3 = open_frontier(client, url, key_prefix, "w3")
    w3.flush(pop=2)
    w3.leave()
    reaper = open_frontier(client, url, key_prefix, "reaper", lease_timeout=0.2)
    time.sleep(0.3)  # w2's heartbeat goes stale: nothing to await, it is dead
    assert "w2" in dict(reaper.reclaim())
    # a crawl made before `heads`: its queues recorded when a worker opens it
    for p in w1.parts:
        client.delete(p.heads)
    client.hdel(w1.keys.state, "heads")
    open_frontier(client, url, key_prefix, "w4")
    # politeness and robots.txt
    store = PolitenessStore(w1)
    store.reserve(slots[1])
    store.backoff(slots[2], 1.0, 0.1, 5.0)
    store.adapt(slots[3], 0.2, 200, start=0.1, minimum=0.0, maximum=5.0, target_concurrency=1.0)
    store.set_crawl_delay(slots[4], 0.1)
    store.set_slot_delays({slots[6]: 0.2})
    assert store.robots_lock("host7.test", "w1", 5.0, slot=slots[7])
    store.robots_put("host7.test", slots[7], b"User-agent: *\nCrawl-delay: 0.1\n", crawl_delay=0.1)
    client.hdel(w1.part_of(slots[7]).crawl_delay, slots[7])
    assert store.robots_get("host7.test", slot=slots[7])
    for i in range(len(w1.parts)):
        for which in ("robots", "nextok", "slotdelay", "crawldelay", "backoff"):
            store.prune(which, "0", 100, 0.0, 0.0, [slots[6]], partition=i)
    w1.add_totals({"pages": 3}, kinds={"timeout": 1}, hosts={slots[0]: 1}, info="{}", seq=1)
    w1.seen_add([fp(5000), fp(1)], slots=[slots[0], slots[1]])
    w1.seen_status()
    if partitions > 1:
        # leases nobody on record holds (a worker forgotten as it leased, then killed)
        w5 = open_frontier(client, url, key_prefix, "w5")
        w5.flush(pop=2)
        client.zrem(w1.keys.workers, "w5")
        for p in w1.parts:
            client.delete(p.lease_beats)
        assert not w1.check_finished().finished
    w1.leave()  # its leases back to the queues, then lease everything again
    w1 = open_frontier(client, url, key_prefix, "w1", download_delay=0.05, concurrency_per_slot=2)
    drain(w1)
    assert w1.check_finished().finished
    w1.leave()


def drain(frontier: RedisFrontier) -> None:
    """Lease and acknowledge until nothing is left (delays are short)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = frontier.flush(pop=16)
        if result.popped:
            frontier.flush(acks=[i for i, _ in result.popped])
            continue
        if frontier.check_finished().finished:
            return
        time.sleep(0.05)  # a slot's politeness delay: nothing to await
    pytest.fail(f"the crawl did not drain: {frontier.status()}")


@pytest.mark.parametrize("partitions", [1, 4])
def test_every_script_declares_every_key_it_touches(own_redis: Any, key_prefix: str,
                                                     partitions: int) -> None:
    client = redis.Redis.from_url(own_redis.url)
    monitor = Monitor(own_redis.url)
    try:
        exercise(client, own_redis.url, key_prefix, partitions)
    finally:
        lines = monitor.stop()
    scripts, problems = undeclared(client, lines)
    assert scripts > 30, lines[:20]
    assert not problems, problems[:20]


def test_the_check_itself_finds_a_key_a_script_builds(own_redis: Any, key_prefix: str) -> None:
    client = redis.Redis.from_url(own_redis.url)
    monitor = Monitor(own_redis.url)
    try:
        client.eval("redis.call('SET', KEYS[1], 1); redis.call('SET', KEYS[1] .. 'x', 2)", 1,
                    f"{key_prefix}:k")
        client.eval("return redis.call('SCAN', 0)", 0)
    finally:
        lines = monitor.stop()
    scripts, problems = undeclared(client, lines)
    assert scripts == 2
    assert problems == [f"SET {f'{key_prefix}:kx'.encode()!r} not in KEYS "
                        f"{[f'{key_prefix}:k'.encode()]}", "a script ran SCAN"]
