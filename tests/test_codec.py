"""The request codec: what round-trips, what fails at enqueue, what is rejected."""

from __future__ import annotations

import pickle
import re

import msgpack
import pytest
from scrapy import FormRequest, Request, Spider
from scrapy.http import JsonRequest

from conftest import frontier, runspider_args, scrapy, stat
from local_site import LinkedSite
from scrapy_fleet.frontier import codec
from scrapy_fleet.redis_server import connect


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


def test_subclass_attributes_ride_along(spider):
    request = JsonRequest("http://example.com/", data={"a": 1}, dumps_kwargs={"indent": 2})
    again = codec.decode(codec.encode(request, spider), spider)
    assert again._dumps_kwargs == {"indent": 2, "sort_keys": True}
    assert again.body == request.body


@pytest.mark.parametrize(
    "url", ["http://example.com/", "https://example.com/a", "http://www.example.com/",
            "https://www.example.com/?q=1", "HTTPS://WWW.EXAMPLE.COM/", "https://wwwx.example/",
            "https://www.", "http://"],
)
def test_every_url_prefix_round_trips(spider, url):
    assert codec.decode(codec.encode(Request(url), spider), spider).url == Request(url).url


def test_a_plain_link_costs_its_url_and_a_few_bytes(user_spider):
    # the stored form leaves out field names and defaults (see the module docstring)
    url = "https://www.site7.example/catalog/3/item-37.html?ref=list&p=2"
    rest = len(url) - len("https://www.")
    for request, most in ((Request(url), rest + 4), (Request(url, callback=user_spider.parse), rest + 5),
                          (Request(url, callback=user_spider._private_callback),
                           rest + 6 + len("_private_callback"))):
        blob = codec.encode(request, user_spider)
        assert len(blob) <= most
        assert codec.decode(blob, user_spider).callback == request.callback


def test_entries_of_the_first_format_are_still_read(spider):
    # queued by an earlier version (a to_dict mapping under "SF1"): a resumed crawl runs them
    request = Request("http://example.com/a", callback=spider.parse_item, priority=3,
                      meta={"depth": 1}, headers={"Referer": "http://example.com/"})
    old = codec.MAGIC_V1 + msgpack.packb(request.to_dict(spider=spider), use_bin_type=True)
    again = codec.decode(old, spider)
    assert (again.url, again.callback, again.priority, again.meta) == (
        request.url, spider.parse_item, 3, {"depth": 1})
    assert again.headers.getlist("Referer") == [b"http://example.com/"]


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
    """An entry someone wrote into Redis in the format workers write today."""
    return codec._compact({"url": "http://example.com/", **fields})


def _forged_v1(**fields) -> bytes:
    """The same in the first format (a to_dict mapping), which workers still read."""
    return codec.MAGIC_V1 + msgpack.packb({"url": "http://example.com/", **fields})


FORGERIES = [
    dict(callback="__init__"),
    dict(callback="no_such_method"),
    dict(errback="crawler"),  # an attribute, not a method
    dict(_class="os.system"),
    dict(_class="subprocess.Popen"),
    dict(_class="scrapy_fleet_not_imported.evil.Request"),
    dict(priority="high"),
    dict(meta=["not", "a", "dict"]),
    dict(body="text, not bytes"),
    dict(callback=2),  # only 1 stands for "parse"
    dict(callback=True),
]


@pytest.mark.parametrize(
    "blob",
    [
        None,
        b"",
        pickle.dumps(Request("http://example.com/")),  # what scrapy-redis stores
        pickle.dumps({"url": "http://example.com/"}),
        b"\xf0\xc1\xc1",  # msgpack's never-used byte
        b"\xf5" + msgpack.packb(["example.com/"]),  # no such prefix code
        b"\xf1" + msgpack.packb([1, "example.com/"]),  # no URL
        b"\xf1" + msgpack.packb({"url": "http://example.com/"}),  # a mapping: SF1's shape
        b"\xf1" + msgpack.packb(["example.com/"] + [None] * 40),  # too long
        b"\xf1" + msgpack.packb(["example.com/"] + [None] * 13 + [{"url": "file:///"}]),
        b"\xf1" + msgpack.packb(["example.com/"] + [None] * 13 + [["x"]]),
        b"\xf1" + b"\xc1\xc1",
        codec.MAGIC_V1 + b"\xc1\xc1",
        codec.MAGIC_V1 + msgpack.packb(["http://example.com/"]),
        *(_forged(**fields) for fields in FORGERIES),
        *(_forged_v1(**fields) for fields in FORGERIES[:-2]),
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


# --- what a request read back from Redis may make a worker do ---------------------------


class Mixin:
    def parse_from_mixin(self, response):
        pass


class UserSpider(Mixin, Spider):
    name = "user"

    def parse(self, response):
        pass

    def closed(self, reason):  # Scrapy calls it when the crawl ends: never a callback
        pass

    def _private_callback(self, response):  # a user's own method, as in plain Scrapy
        pass

    @classmethod
    def make(cls, response):
        pass

    @staticmethod
    def helper(response):
        pass


@pytest.fixture
def user_spider() -> UserSpider:
    return UserSpider()


@pytest.mark.parametrize(
    "name",
    ["update_settings", "start", "start_requests", "close", "closed", "from_crawler",
     "handles_request", "log", "_set_crawler", "_parse", "__init__", "__class__", "__reduce__",
     "make", "helper", "name", "custom_settings", "logger", "crawler", "settings"],
)
def test_only_methods_the_spiders_own_classes_define_are_callbacks(user_spider, name):
    for field in ("callback", "errback"):
        with pytest.raises(codec.InvalidEntry, match=re.escape(repr(name))):
            codec.decode(_forged(**{field: name}), user_spider)


@pytest.mark.parametrize("name", ["parse", "parse_from_mixin", "_private_callback"])
def test_methods_of_the_users_classes_and_mixins_are_callbacks(user_spider, name):
    request = codec.decode(_forged(callback=name, errback=name), user_spider)
    assert request.callback == getattr(user_spider, name)
    again = codec.decode(codec.encode(request, user_spider), user_spider)
    assert again.callback == getattr(user_spider, name)


def test_an_inherited_parse_is_not_a_callback(spider):
    # DemoSpider does not define parse: only scrapy.Spider's placeholder would answer
    with pytest.raises(codec.InvalidEntry, match="'parse'"):
        codec.decode(_forged(callback="parse"), spider)


def test_an_instance_attribute_never_shadows_a_method(user_spider):
    user_spider.parse = print
    with pytest.raises(codec.InvalidEntry):
        codec.decode(_forged(callback="parse"), user_spider)


def test_a_spiders_own_request_with_a_refused_callback_fails_at_enqueue(user_spider):
    with pytest.raises(codec.UnserializableRequest, match="'closed' is a method Scrapy itself calls"):
        codec.encode(Request("http://example.com/", callback=user_spider.closed), user_spider)


def test_crawlspider_links_round_trip():
    from scrapy.linkextractors import LinkExtractor
    from scrapy.spiders import CrawlSpider, Rule

    class Rules(CrawlSpider):
        name = "rules"
        rules = (Rule(LinkExtractor(), callback="parse_page", errback="on_error", follow=True),)

        def parse_page(self, response):
            pass

        def on_error(self, failure):
            pass

    spider = Rules()
    from scrapy.link import Link

    request = spider._build_request(0, Link("http://example.com/a", text="a"))
    again = codec.decode(codec.encode(request, spider), spider)
    assert again.callback == spider._callback and again.errback == spider._errback
    assert again.meta == {"rule": 0, "link_text": "a"}


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "FILE:///etc/passwd", " file:///etc/passwd", "\tfile:/etc/passwd",
     "data:,hello", "ftp://example.com/x",
     "s3://bucket/key", "about:blank", "javascript:alert(1)", "/relative"],
)
def test_only_http_and_https_urls_are_read_back_by_default(spider, url):
    with pytest.raises(codec.InvalidEntry):
        codec.decode(_forged(url=url), spider)


def test_allowed_schemes_widen_both_ends(spider):
    from scrapy_fleet.config import FleetConfig

    request = Request("file:///etc/hostname")
    with pytest.raises(codec.UnserializableRequest, match="'file' is not in FLEET_ALLOWED_SCHEMES"):
        codec.encode(request, spider)
    wider = FleetConfig(allowed_schemes=frozenset({"http", "https", "file"}))
    again = codec.decode(codec.encode(request, spider, wider), spider, wider)
    assert again.url == "file:///etc/hostname"
    assert codec.decode(_forged(url="https://example.com/"), spider).url == "https://example.com/"


@pytest.mark.parametrize(
    "key", ["proxy", "_auth_proxy", "_scheme_proxy", "bindaddress", "allow_offsite",
            "ftp_local_filename", "is_secure"],
)
def test_guarded_meta_keys_are_refused_from_redis_unless_trusted(spider, key):
    from scrapy_fleet.config import FleetConfig

    blob = _forged(meta={key: "http://attacker.example:3128"})
    with pytest.raises(codec.InvalidEntry, match=re.escape(repr(key))):
        codec.decode(blob, spider)
    guard = "proxy" if key.startswith("_") else key
    trusted = FleetConfig(trusted_meta=frozenset({guard}))
    assert codec.decode(blob, spider, trusted).meta == {key: "http://attacker.example:3128"}


def test_a_spiders_own_proxy_fails_at_enqueue_naming_the_setting(spider):
    from scrapy_fleet.config import FleetConfig

    request = Request("http://example.com/", meta={"proxy": "http://proxy.local:3128"})
    with pytest.raises(codec.UnserializableRequest, match="add 'proxy' to FLEET_TRUSTED_META"):
        codec.encode(request, spider)
    trusted = FleetConfig(trusted_meta=frozenset({"proxy"}))
    assert codec.decode(codec.encode(request, spider, trusted), spider, trusted).meta["proxy"] == (
        "http://proxy.local:3128")


def test_a_proxy_taken_from_the_environment_is_not_stored(spider):
    # what HttpProxyMiddleware leaves on a request it handled with http_proxy set; a
    # retry or redirect of it is enqueued again
    request = Request(
        "http://example.com/",
        meta={"proxy": "http://proxy.local:3128", "_scheme_proxy": True,
              "_auth_proxy": "http://proxy.local:3128", "depth": 1},
        headers={"Proxy-Authorization": "Basic dXNlcjpwdw==", "X-Kept": "1"},
    )
    blob = codec.encode(request, spider)
    assert b"dXNlcjpwdw" not in blob and b"proxy.local" not in blob
    again = codec.decode(blob, spider)
    assert again.meta == {"depth": 1}
    assert again.headers.get("X-Kept") == b"1" and "Proxy-Authorization" not in again.headers
    assert request.meta["proxy"] == "http://proxy.local:3128"  # the live request is untouched


def test_the_codec_reads_the_crawlers_settings_once():
    from scrapy.utils.test import get_crawler

    crawler = get_crawler(DemoSpider, {"FLEET_ALLOWED_SCHEMES": "http,https,file",
                                       "FLEET_TRUSTED_META": ["proxy"]})
    spider = DemoSpider.from_crawler(crawler)
    request = Request("file:///tmp/x", meta={"proxy": "http://p:1"})
    assert codec.decode(codec.encode(request, spider), spider).url == "file:///tmp/x"


# --- size -------------------------------------------------------------------------------


def test_a_request_above_the_cap_is_too_large_naming_size_and_limit(spider):
    from scrapy_fleet.config import FleetConfig

    small = FleetConfig(max_request_bytes=1000)
    request = Request("http://example.com/", meta={"blob": b"x" * 5000})
    with pytest.raises(codec.RequestTooLarge) as raised:
        codec.encode(request, spider, small)
    message = str(raised.value)
    assert "request too large" in message and "FLEET_MAX_REQUEST_BYTES = 1000" in message
    assert re.search(r"\b5\d\d\d bytes encoded \(meta 50\d\d bytes", message), message
    assert isinstance(raised.value, codec.UnserializableRequest)  # fails where it is made
    blob = codec.encode(request, spider)  # the default takes it
    with pytest.raises(codec.InvalidEntry, match="FLEET_MAX_REQUEST_BYTES"):
        codec.decode(blob, spider, small)


def test_the_default_cap_is_below_what_redis_takes(redis_client):
    from scrapy_fleet.config import DEFAULT_MAX_REQUEST_BYTES, FleetConfig
    from scrapy_fleet.frontier import scheduler

    assert FleetConfig().max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
    bulk = int(redis_client.config_get("proto-max-bulk-len")["proto-max-bulk-len"])
    query = int(redis_client.config_get("client-query-buffer-limit")["client-query-buffer-limit"])
    assert DEFAULT_MAX_REQUEST_BYTES < bulk
    # a whole buffered push batch goes to Redis in one command
    assert DEFAULT_MAX_REQUEST_BYTES * getattr(scheduler, "_PUSH_BUFFER_LIMIT", 64) < query


# --- end to end: real `scrapy` workers, a real Redis, local sites ------------------------


def _run_spider(tmp_path, spider_file: str, settings: dict[str, str], **spider_args: str):
    return scrapy(tmp_path, *runspider_args(spider_file, settings, spider_args))


@pytest.mark.slow
def test_a_crawlspider_crawls_on_the_fleet(tmp_path, fleet_settings, serve):
    site = serve(LinkedSite(30))
    result = _run_spider(tmp_path, "rulespider.py", fleet_settings, start_url=f"{site.url}/page/0")
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert stat(log, "fleet/invalid") == 0, log[-3000:]
    fetches = site.page_fetches()
    assert set(fetches) == {f"/page/{i}" for i in range(30)} and max(fetches.values()) == 1
    assert stat(log, "item_scraped_count") == 29  # every page but the start page, via the rule


@pytest.mark.slow
def test_forged_entries_cannot_read_files_use_a_proxy_or_call_spider_hooks(
    tmp_path, fleet_settings, redis_url, key_prefix, serve
):
    site, proxy = serve(LinkedSite(20)), serve(LinkedSite(1))
    secret = tmp_path / "secret.txt"
    secret.write_text("<html><a href='/page/1'>do not read me</a></html>")
    forged = [
        _forged(url=secret.as_uri(), callback="parse"),
        _forged(url=f"{site.url}/page/5", meta={"proxy": proxy.url}),
        _forged(url=f"{site.url}/page/6", callback="update_settings"),
        _forged(url=f"{site.url}/page/7", errback="start"),
    ]
    watch = frontier(redis_url, key_prefix)
    watch.open(fresh=False)
    watch.flush([(b"", "127.0.0.1", 100, blob) for blob in forged])  # ahead of every page
    watch.leave()
    result = _run_spider(tmp_path, "linkspider.py", fleet_settings, start_url=f"{site.url}/page/0")
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert stat(log, "fleet/invalid") == 4, log[-3000:]
    for reason in ("URL scheme 'file' is not in FLEET_ALLOWED_SCHEMES",
                   "meta key 'proxy' is not in FLEET_TRUSTED_META",
                   "callback 'update_settings' is a method Scrapy itself calls",
                   "callback 'start' is a method Scrapy itself calls"):
        assert reason in log, reason
    assert sum(proxy.fetches.values()) == 0, "a request went through the forged proxy"
    assert stat(log, "response_received_count") == 20  # the site's pages, no file
    assert set(site.page_fetches()) == {f"/page/{i}" for i in range(20)}


@pytest.mark.slow
def test_a_request_too_large_fails_where_it_is_made_not_as_redis_unreachable(tmp_path, own_redis, key_prefix,
                                                                            serve):
    # Redis with its smallest bulk limit (1 MB) stands in for the real 512 MB one
    client = connect(own_redis.url)
    client.config_set("proto-max-bulk-len", 1024 * 1024)
    client.close()
    site = serve(LinkedSite(10))
    settings = {"REDIS_URL": own_redis.url, "FLEET_KEY_PREFIX": key_prefix,
                "FLEET_REDIS_RETRY_TIMEOUT": "2", "FLEET_MAX_REQUEST_BYTES": "500000"}
    result = _run_spider(tmp_path, "bigmetaspider.py", settings,
                         start_url=f"{site.url}/page/0", meta_bytes=str(2 * 1024 * 1024))
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "unreachable" not in log
    assert re.search(r"request too large, 2097\d\d\d bytes encoded \(meta 2097\d\d\d bytes.*"
                     r"more than FLEET_MAX_REQUEST_BYTES = 500000", log), log[-3000:]
    # the parent was acknowledged and its other link crawled
    assert set(site.page_fetches()) == {"/page/0", "/page/2"}
