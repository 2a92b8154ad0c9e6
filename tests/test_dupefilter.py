"""FleetDupeFilter: compact fingerprints, and a shared seen-set when used on its own."""

from __future__ import annotations

from scrapy import Request
from scrapy.utils.request import RequestFingerprinter

from scrapy_fleet.frontier.dupefilter import FleetDupeFilter
from scrapy_fleet.frontier.keys import CrawlKeys


def make(redis_url: str, key_prefix: str) -> FleetDupeFilter:
    return FleetDupeFilter(
        fingerprinter=RequestFingerprinter(),
        keys=CrawlKeys(key_prefix, "spider"),
        redis_url=redis_url,
    )


def test_fingerprints_are_20_raw_bytes(redis_url, key_prefix):
    fp = make(redis_url, key_prefix).fingerprint(Request("http://example.com/a"))
    assert isinstance(fp, bytes) and len(fp) == 20


def test_two_processes_share_one_seen_set(redis_url, key_prefix, redis_client):
    one, two = make(redis_url, key_prefix), make(redis_url, key_prefix)
    assert one.request_seen(Request("http://example.com/a")) is False
    assert two.request_seen(Request("http://example.com/a")) is True
    assert two.request_seen(Request("http://example.com/a#fragment")) is True  # canonical
    assert two.request_seen(Request("http://example.com/b")) is False
    meta = CrawlKeys(key_prefix, "spider").seen.meta
    assert redis_client.hget(meta, "n") == b"2"  # counted by the seen-set's script
    one.close("finished")
    two.close("finished")
