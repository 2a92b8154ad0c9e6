"""The request codec: what round-trips, what fails at enqueue, what is rejected."""

from __future__ import annotations

import pickle
import re

import msgpack
import pytest
from scrapy import FormRequest, Request, Spider
from scrapy.http import JsonRequest

from scrapy_fleet.frontier import codec


class DemoSpider(Spider):
    name = "demo"

    def parse_item(self, response):
        pass

    def on_error(self, failure):
        pass

    def _private(self, response):
        pass


@pytest.fixture
def spider() -> DemoSpider:
    return DemoSpider()


def test_round_trip_keeps_everything(spider):
    request = Request(
        "http://example.com/a?b=1",
        callback=spider.parse_item,
        errback=spider.on_error,
        method="POST",
        body=b"\x00\xffbinary",
        headers={"X-Token": "abc"},
        cookies={"session": "1"},
        meta={"depth": 2, "nested": {"list": [1, 2.5, None, "x", b"y"]}, "ok": True},
        cb_kwargs={"rank": 7},
        priority=-3,
        dont_filter=True,
        flags=["f"],
        encoding="gbk",
    )
    again = codec.decode(codec.encode(request, spider), spider)
    assert again.url == request.url
    assert again.callback == spider.parse_item
    assert again.errback == spider.on_error
    assert again.method == "POST"
    assert again.body == request.body
    assert again.headers.getlist("X-Token") == [b"abc"]
    assert again.cookies == {"session": "1"}
    assert again.meta == request.meta
    assert again.cb_kwargs == {"rank": 7}
    assert again.priority == -3
    assert again.dont_filter is True
    assert again.flags == ["f"]
    assert again.encoding == "gbk"


@pytest.mark.parametrize("cls", [FormRequest, JsonRequest])
def test_request_subclasses_round_trip(spider, cls):
    again = codec.decode(codec.encode(cls("http://example.com/"), spider), spider)
    assert type(again) is cls


def test_lease_id_is_not_stored(spider):
    request = Request("http://example.com/", meta={codec.LEASE_META_KEY: "12", "keep": 1})
    assert codec.decode(codec.encode(request, spider), spider).meta == {"keep": 1}


@pytest.mark.parametrize(
    ("meta", "cb_kwargs", "named"),
    [
        ({"when": object()}, {}, "meta['when'] holds a object"),
        ({"deep": {"inner": [1, {2, 3}]}}, {}, "meta['deep']['inner'][1] holds a set"),
        ({}, {"item": Spider}, "cb_kwargs['item'] holds a type"),
        ({"huge": 2**70}, {}, "meta['huge'] holds an integer too large"),
    ],
)
def test_unstorable_values_fail_at_enqueue_naming_the_key(spider, meta, cb_kwargs, named):
    with pytest.raises(codec.UnserializableRequest, match=re.escape(named)):
        codec.encode(Request("http://example.com/", meta=meta, cb_kwargs=cb_kwargs), spider)


def test_callback_that_is_not_a_spider_method_fails_at_enqueue(spider):
    with pytest.raises(codec.UnserializableRequest, match="cannot store"):
        codec.encode(Request("http://example.com/", callback=lambda r: None), spider)


def _forged(**fields) -> bytes:
    return codec.MAGIC + msgpack.packb({"url": "http://example.com/", **fields})


@pytest.mark.parametrize(
    "blob",
    [
        None,
        b"",
        pickle.dumps(Request("http://example.com/")),  # what scrapy-redis stores
        pickle.dumps({"url": "http://example.com/"}),
        codec.MAGIC + b"\xc1\xc1",  # msgpack's never-used byte
        codec.MAGIC + msgpack.packb(["http://example.com/"]),
        _forged(callback="_private"),
        _forged(callback="__init__"),
        _forged(callback="no_such_method"),
        _forged(errback="crawler"),  # an attribute, not a method
        _forged(_class="os.system"),
        _forged(_class="subprocess.Popen"),
        _forged(_class="scrapy_fleet_not_imported.evil.Request"),
        _forged(priority="high"),
        _forged(meta=["not", "a", "dict"]),
        _forged(body="text, not bytes"),
    ],
)
def test_foreign_entries_are_rejected(spider, blob):
    with pytest.raises(codec.InvalidEntry):
        codec.decode(blob, spider)


def test_rejecting_a_class_path_imports_nothing(spider):
    import sys

    assert "antigravity" not in sys.modules
    with pytest.raises(codec.InvalidEntry):
        codec.decode(_forged(_class="antigravity.Request"), spider)
    assert "antigravity" not in sys.modules
