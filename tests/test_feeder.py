"""The start-key feeder (scrapy_fleet/frontier/feeder.py): entries into requests, batches
acknowledged once stored."""

from __future__ import annotations

import time

import redis
from scrapy import Request

from scrapy_fleet.frontier.feeder import StartKeyFeeder
from test_startkey import start_key


class Counts:
    """What the feeder counts (Scrapy's stats collector interface)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc_value(self, key: str, count: int = 1, start: int = 0) -> None:
        self.values[key] = self.values.get(key, start) + count


def make(entry: bytes) -> Request:
    if not entry.startswith(b"http"):
        raise ValueError("not a url")
    return Request(entry.decode())


def test_a_stored_batch_is_acknowledged_at_once_not_fed_again_after_its_lease(
        redis_client: redis.Redis, key_prefix: str) -> None:
    """A worker busy for longer than the lease after storing a batch: the batch is
    acknowledged by the scheduler's next tick (ack_stored), so no other worker gets it
    back, and its bad entry is counted once."""
    busy = start_key(redis_client, key_prefix, "busy", lease_timeout=0.2)
    other = start_key(redis_client, key_prefix, "other")
    redis_client.rpush(busy.key, "http://a.example/1", "junk", "http://a.example/2")
    enqueued: list[Request] = []
    feeder = StartKeyFeeder([busy], make, enqueued.append, Counts(), batch_size=8)
    assert feeder.feed() == 3
    assert [r.url for r in enqueued] == ["http://a.example/1", "http://a.example/2"]
    batches, bad = feeder.unflushed()
    assert len(batches) == 1 and bad == 1  # they ride with the flush that stores them
    feeder.stored(batches)  # the flush went through
    feeder.ack_stored()
    assert redis_client.hlen(busy.feeding_key) == 0
    time.sleep(0.3)  # past the lease (server time: nothing to await)
    taken = other.take(10)
    assert taken.returned == 0 and taken.batch is None


def test_an_unacknowledged_stored_batch_would_come_back(redis_client: redis.Redis,
                                                        key_prefix: str) -> None:
    """What ack_stored prevents: left for the next TAKE, a stored batch returns to the
    key once its lease runs out, and is fed again."""
    busy = start_key(redis_client, key_prefix, "busy", lease_timeout=0.2)
    other = start_key(redis_client, key_prefix, "other")
    redis_client.rpush(busy.key, "http://a.example/1")
    feeder = StartKeyFeeder([busy], make, lambda request: None, Counts(), batch_size=8)
    feeder.feed()
    feeder.stored(feeder.unflushed()[0])
    time.sleep(0.3)
    assert other.take(10).returned == 1
