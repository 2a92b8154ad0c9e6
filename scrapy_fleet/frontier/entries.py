"""Start entries as scrapy-redis's producers write them: a plain URL, or a JSON object.

``{"url": ..., "meta": {...}, "method": "POST", "other": "fields"}``: ``url`` is required,
``meta`` becomes the request's meta, ``method`` its method (GET by default), and every
other field is form data (a ``FormRequest``, as scrapy-redis makes: in the query string
for GET, in the body for POST). Used by ``RedisSpider.make_request_from_data`` and by
``scrapy fleet feed``.

Unlike scrapy-redis (which logs a warning and moves on), an entry that cannot be a
request raises :class:`BadEntry` with the reason, and the caller counts it.
"""

from __future__ import annotations

import json
from typing import Any

from scrapy import FormRequest, Request


class BadEntry(ValueError):
    """An entry that cannot be made into a request; the message says why."""


def request_from_data(data: bytes | str, encoding: str = "utf-8") -> Request:
    if isinstance(data, bytes):
        try:
            text = data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise BadEntry(f"not {encoding} text: {exc}") from None
    else:
        text = data
    text = text.strip()
    if not text:
        raise BadEntry("empty entry")
    if text.startswith("{"):
        return _from_json(text)
    if text.startswith(("[", '"')):
        raise BadEntry("JSON that is not an object; give a URL or {\"url\": ...}")
    return _request(Request, text)


def _from_json(text: str) -> Request:
    try:
        fields = json.loads(text)
    except ValueError as exc:
        raise BadEntry(f"bad JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise BadEntry("JSON that is not an object")
    url = fields.pop("url", None)
    if not isinstance(url, str) or not url.strip():
        raise BadEntry('JSON object without a "url" string')
    method = fields.pop("method", "GET")
    meta = fields.pop("meta", None) or {}
    if not isinstance(method, str) or not method.strip():
        raise BadEntry('"method" must be a string')
    if not isinstance(meta, dict):
        raise BadEntry('"meta" must be a JSON object')
    formdata: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, (str, int, float, bool)):
            formdata[name] = str(value)
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            formdata[name] = [str(v) for v in value]
        else:
            raise BadEntry(f"form field {name!r} must be a string, a number or a list of them")
    return _request(FormRequest, url.strip(), method=method.strip().upper(),
                    formdata=formdata or None, meta=meta)


def _request(cls: type[Request], url: str, **kwargs: Any) -> Request:
    try:
        return cls(url, **kwargs)
    except (ValueError, TypeError) as exc:  # no scheme, bad formdata...
        raise BadEntry(f"not a request: {exc}") from None
