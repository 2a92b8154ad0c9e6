"""Start entries in scrapy-redis's formats: a URL, or a JSON object."""

from __future__ import annotations

import pytest
from scrapy import FormRequest

from scrapy_fleet.frontier.entries import BadEntry, request_from_data


def test_a_plain_url() -> None:
    request = request_from_data(b"  http://example.com/a?b=1 \n")
    assert request.url == "http://example.com/a?b=1"
    assert request.method == "GET" and not request.dont_filter


def test_scrapy_redis_json_with_meta_method_and_form_data() -> None:
    request = request_from_data(
        b'{"url": "http://example.com/s", "meta": {"job-id": "123xsd"}, '
        b'"method": "post", "q": "books", "page": 2, "tags": ["a", "b"]}')
    assert isinstance(request, FormRequest)
    assert request.method == "POST" and request.meta["job-id"] == "123xsd"
    assert sorted(request.body.split(b"&")) == [b"page=2", b"q=books", b"tags=a", b"tags=b"]


def test_get_form_data_goes_in_the_query_string() -> None:
    request = request_from_data('{"url": "http://example.com/s", "q": "x y"}')
    assert request.method == "GET" and request.url == "http://example.com/s?q=x+y"


def test_another_encoding() -> None:
    request = request_from_data("http://example.com/é".encode("latin-1"), "latin-1")
    assert request.url == "http://example.com/%C3%A9"


@pytest.mark.parametrize(("data", "why"), [
    (b"", "empty entry"),
    (b"   ", "empty entry"),
    (b"not a url", "Missing scheme"),
    (b"{bad json", "bad JSON"),
    (b'["http://example.com"]', "not an object"),
    (b'"http://example.com"', "not an object"),
    (b'{"meta": {}}', 'without a "url"'),
    (b'{"url": 5}', 'without a "url"'),
    (b'{"url": "http://x.com", "meta": [1]}', '"meta" must be'),
    (b'{"url": "http://x.com", "method": 3}', '"method" must be'),
    (b'{"url": "http://x.com", "form": {"nested": 1}}', "form field 'form'"),
    (b"\xff\xfe", "not utf-8 text"),
])
def test_bad_entries_say_why(data: bytes, why: str) -> None:
    with pytest.raises(BadEntry, match=why):
        request_from_data(data)
