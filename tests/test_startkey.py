"""The start key that producers push into: taken at least once, each entry by one taker."""

from __future__ import annotations

import time

import msgpack
import pytest
import redis

from scrapy_fleet.frontier.keys import CrawlKeys, hash_tag
from scrapy_fleet.frontier.startkey import StartKey


def start_key(client: redis.Redis, key_prefix: str, worker: str = "w1",
              lease_timeout: float = 30.0) -> StartKey:
    key = f"{key_prefix}-spider:start_urls"
    return StartKey(client, key, CrawlKeys(key_prefix, "spider").feeding(key), worker,
                    lease_timeout=lease_timeout)


def test_hash_tag_follows_redis_cluster_rules() -> None:
    assert hash_tag("myspider:start_urls") == "myspider:start_urls"
    assert hash_tag("{user1000}.following") == "user1000"
    assert hash_tag("foo{}{bar}") == "foo{}{bar}"  # empty first tag: the whole key
    assert hash_tag("foo{{bar}}zap") == "{bar"
    keys = CrawlKeys("fleet", "s")
    assert keys.feeding("q:{jobs}") == "fleet:feeding:{jobs}"
    assert keys.feeding("myspider:start_urls") == "fleet:feeding:{myspider:start_urls}"


def test_list_taken_from_the_head_like_scrapy_redis(redis_client: redis.Redis, key_prefix: str) -> None:
    source = start_key(redis_client, key_prefix)
    redis_client.lpush(source.key, "a", "b", "c")  # the list is now c, b, a
    first = source.take(2)
    assert first.kind == "list" and first.batch is not None
    assert first.batch.entries == [b"c", b"b"]
    assert redis_client.lrange(source.key, 0, -1) == [b"a"]
    assert redis_client.hlen(source.feeding_key) == 1  # held until acknowledged
    second = source.take(5, acks=[first.batch.field])
    assert second.batch is not None and second.batch.entries == [b"a"]
    assert redis_client.hkeys(source.feeding_key) == [second.batch.field.encode()]
    assert second.batch.field.endswith(" w1 2")  # "<lease end ms> <worker> <n>"
    empty = source.take(5, acks=[second.batch.field])
    assert empty.batch is None and empty.kind == "none"
    assert redis_client.exists(source.feeding_key) == 0


def test_set_and_sorted_set(redis_client: redis.Redis, key_prefix: str) -> None:
    source = start_key(redis_client, key_prefix)
    redis_client.sadd(source.key, "x", "y", "z")
    taken = source.take(10)
    assert taken.kind == "set" and taken.batch is not None
    assert sorted(taken.batch.entries) == [b"x", b"y", b"z"]
    source.ack([taken.batch.field])
    redis_client.zadd(source.key, {"low": 1, "high": 9, "mid": 5})
    taken = source.take(2)
    assert taken.kind == "zset" and taken.batch is not None
    assert taken.batch.entries == [b"high", b"mid"]  # highest score first, as scrapy-redis


def test_a_batch_never_acknowledged_goes_back_after_its_lease(
        redis_client: redis.Redis, key_prefix: str) -> None:
    """A worker killed between taking and storing loses nothing: its batch returns to the
    key once the lease runs out, in its old place and order, and another worker takes it."""
    dead = start_key(redis_client, key_prefix, "dead", lease_timeout=0.2)
    live = start_key(redis_client, key_prefix, "live")
    redis_client.rpush(dead.key, "1", "2", "3", "4")
    taken = dead.take(2)
    assert taken.batch is not None and taken.batch.entries == [b"1", b"2"]
    early = live.take(1)
    assert early.batch is not None and early.batch.entries == [b"3"] and early.returned == 0
    time.sleep(0.3)  # the dead worker's lease runs out (server time: nothing to await)
    later = live.take(10, acks=[early.batch.field])
    assert later.returned == 2
    assert later.batch is not None and later.batch.entries == [b"1", b"2", b"4"]


def test_give_back_restores_each_kind(redis_client: redis.Redis, key_prefix: str) -> None:
    source = start_key(redis_client, key_prefix)
    redis_client.zadd(source.key, {"a": 2.5, "b": 1})
    taken = source.take(5)
    assert taken.batch is not None
    assert source.give_back([taken.batch.field]) == 2
    assert redis_client.zrange(source.key, 0, -1, withscores=True) == [(b"b", 1.0), (b"a", 2.5)]
    assert redis_client.exists(source.feeding_key) == 0


def test_two_takers_take_each_entry_once(redis_client: redis.Redis, key_prefix: str) -> None:
    one, two = start_key(redis_client, key_prefix, "one"), start_key(redis_client, key_prefix, "two")
    redis_client.rpush(one.key, *[str(i) for i in range(1000)])
    got: list[bytes] = []
    acks: dict[StartKey, list[str]] = {one: [], two: []}
    while True:
        results = [(s, s.take(7, acks[s])) for s in (one, two)]
        if all(r.batch is None for _, r in results):
            break
        for source, result in results:
            acks[source] = [result.batch.field] if result.batch else []
            got += result.batch.entries if result.batch else []
    assert sorted(got, key=int) == [str(i).encode() for i in range(1000)]


def test_junk_is_dropped_and_a_wrong_type_is_reported(
        redis_client: redis.Redis, key_prefix: str) -> None:
    source = start_key(redis_client, key_prefix)
    redis_client.hset(source.feeding_key, mapping={
        "forged": b"\xc1not msgpack",  # a name without a deadline
        "1 w 1": b"\xc1not msgpack",  # expired, not a batch
        "2 w 2": msgpack.packb([1, "list", "not a table"]),
        "99999999999999 w 3": b"\xc1",  # not due yet: left alone until it is
    })
    redis_client.set(source.key, "a string, not a queue")
    result = source.take(5)
    assert result.kind == "string" and result.batch is None
    assert result.junk == 3
    assert redis_client.hkeys(source.feeding_key) == [b"99999999999999 w 3"]
    assert redis_client.get(source.key) == b"a string, not a queue"  # left for its owner
    redis_client.delete(source.key)
    redis_client.set(source.feeding_key, "junk")  # the feeding key itself overwritten
    redis_client.rpush(source.key, "ok")
    result = source.take(5)
    assert result.batch is not None and result.batch.entries == [b"ok"]


def test_an_entry_too_large_to_be_a_request_is_dropped_in_redis(
        redis_client: redis.Redis, key_prefix: str) -> None:
    source = start_key(redis_client, key_prefix)
    source.max_entry_bytes = 1000
    redis_client.rpush(source.key, "a", b"x" * 1001, "b")
    taken = source.take(10)
    assert taken.oversize == 1
    assert taken.batch is not None and taken.batch.entries == [b"a", b"b"]


@pytest.mark.parametrize("entry", [b"\xff\xfe binary", b"x" * 100_000, b""])
def test_entries_come_back_byte_for_byte(redis_client: redis.Redis, key_prefix: str,
                                          entry: bytes) -> None:
    source = start_key(redis_client, key_prefix, lease_timeout=0.05)
    redis_client.rpush(source.key, entry)
    taken = source.take(1)
    assert taken.batch is not None and taken.batch.entries == [entry]
    time.sleep(0.1)
    again = source.take(1)
    assert again.returned == 1 and again.batch is not None and again.batch.entries == [entry]


def test_a_frozen_taker_waking_after_its_lease_changes_nothing(
        redis_client: redis.Redis, key_prefix: str) -> None:
    """SIGSTOP past the lease: the batch went back and another worker took it; the frozen
    worker's late acknowledgement (or give-back) of its old batch touches nothing."""
    frozen = start_key(redis_client, key_prefix, "frozen", lease_timeout=0.1)
    other = start_key(redis_client, key_prefix, "other")
    redis_client.rpush(frozen.key, "1", "2")
    old = frozen.take(2)
    time.sleep(0.15)  # frozen past its lease (server time: nothing to await)
    again = other.take(2)
    assert again.returned == 2 and again.batch is not None and again.batch.entries == [b"1", b"2"]
    assert old.batch is not None
    frozen.ack([old.batch.field])
    assert frozen.give_back([old.batch.field]) == 0
    assert redis_client.llen(frozen.key) == 0  # nothing put back twice
    assert redis_client.hkeys(frozen.feeding_key) == [again.batch.field.encode()]
