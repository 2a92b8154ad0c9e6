"""Requests to bytes and back, safely: ``Request.to_dict`` + msgpack, never pickle.

The stored form is compact (format 2): one byte, ``0xF0`` plus the code of the URL's
``http(s)://(www.)`` prefix, then a msgpack array of the rest of the URL and the request's
other fields in a fixed order, each ``nil`` where it holds its default, trailing defaults
left out, the callback ``parse`` as ``1``. A typical link costs its URL plus about 4
bytes, where ``to_dict`` with field names and defaults cost about 130 more: a queued
request is half the Redis memory it was. Entries of the first format (``SF1`` and the
``to_dict`` mapping), queued by earlier versions, are still read.

Anyone who can write to a shared Redis must not be able to run code in every worker, nor
point a worker at local files or through their own proxy. So decoding only ever builds
plain data and checks it: its shape, its URL scheme (``FLEET_ALLOWED_SCHEMES``), that its
callbacks are methods the spider's own classes define, that it carries none of the meta
keys in :data:`GUARDED_META` unless ``FLEET_TRUSTED_META`` lists them, and that it is no
larger than ``FLEET_MAX_REQUEST_BYTES``. It instantiates only Request classes that are
already imported. Anything else is an :class:`InvalidEntry`.

Encoding checks the same rules, so that a request the spider itself makes which a worker
would refuse fails at once, in the process that made it, with a message that names the
setting to change.
"""

from __future__ import annotations

import sys
import weakref
from types import FunctionType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgpack
from scrapy import Request, Spider
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.request import request_from_dict

from scrapy_fleet.config import ConfigError, FleetConfig

# format 2's first byte, by URL prefix code; not a pickle (b"\x80") nor msgpack mapping
MAGIC = bytes(range(0xF0, 0xF5))
MAGIC_V1 = b"SF1"  # the first format (a to_dict mapping): still read, no longer written
LEASE_META_KEY = "_fleet_lease"  # the lease id of a request popped from Redis (not stored)
_NO_CALLBACK = "__no_callback__"
_MAX_INT = 2**63 - 1

# types msgpack carries exactly (tuples come back as lists)
_SCALARS = (type(None), bool, int, float, str, bytes)
_FIELDS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "method": (str,),
    "headers": (dict,),
    "body": (bytes,),
    "cookies": (dict, list),
    "meta": (dict,),
    "encoding": (str,),
    "priority": (int,),
    "dont_filter": (bool,),
    "flags": (list,),
    "cb_kwargs": (dict,),
    "callback": (str, type(None)),
    "errback": (str, type(None)),
    "_class": (str,),
}


# The format 2 array: these fields in this order after the rest of the URL, each nil
# when it holds its default; the most often set come first so trailing defaults drop off.
# Attributes of Request subclasses not listed here ride in a last, optional mapping.
_LAYOUT: tuple[tuple[str, Any], ...] = (
    ("callback", None), ("priority", 0), ("meta", {}), ("headers", {}), ("errback", None),
    ("method", "GET"), ("body", b""), ("cookies", {}), ("encoding", "utf-8"),
    ("dont_filter", False), ("flags", []), ("cb_kwargs", {}), ("_class", None),
)
_LAYOUT_NAMES = frozenset(name for name, _ in _LAYOUT) | {"url"}
_URL_PREFIXES = ("", "http://", "https://", "http://www.", "https://www.")  # by code
_PARSE = 1  # the callback "parse", the most common by far


# Meta keys of Scrapy's downloader that let whoever writes a request send a worker's
# traffic somewhere else or reach local files. A request read from Redis may carry them
# only if FLEET_TRUSTED_META lists them; the value says what they would allow.
GUARDED_META: dict[str, str] = {
    "proxy": "send it, with its cookies and credentials, through a proxy of their choice",
    "bindaddress": "choose the local address and network interface it leaves from",
    "allow_offsite": "send it past the spider's allowed_domains",
    "ftp_local_filename": "write what it downloads to any local file",
    "is_secure": "turn TLS off for s3:// requests",
}
# HttpProxyMiddleware's own bookkeeping of a proxy: trusted together with "proxy"
_PROXY_COMPANIONS = ("_auth_proxy", "_scheme_proxy")
# Spider methods Scrapy itself calls (start, close, update_settings...): never a callback
_SPIDER_HOOKS = (frozenset(vars(Spider)) - {"parse"}) | {"closed", "start_requests"}
_CALLBACKS_OK: set[tuple[type, str]] = set()  # (spider class, name) pairs already checked
_CONFIGS: weakref.WeakKeyDictionary[Spider, FleetConfig] = weakref.WeakKeyDictionary()


class UnserializableRequest(ValueError):
    """A request (usually a meta or cb_kwargs value) that the codec cannot carry."""


class RequestTooLarge(UnserializableRequest):
    """A request whose encoding exceeds FLEET_MAX_REQUEST_BYTES (below Redis's 512 MB)."""


class InvalidEntry(ValueError):
    """A queue entry that is not a request this codec wrote: dropped, never executed."""


def config_of(spider: Spider | None) -> FleetConfig:
    """The FleetConfig of the spider's crawler, read once per spider; defaults without one."""
    if spider is None:
        return FleetConfig()
    config = _CONFIGS.get(spider)
    if config is None:
        crawler = getattr(spider, "crawler", None)
        try:
            config = FleetConfig.from_settings(crawler.settings) if crawler else FleetConfig()
        except ConfigError:
            config = FleetConfig()  # already refused at start-up by the add-on
        _CONFIGS[spider] = config
    return config


def encode(request: Request, spider: Spider | None, config: FleetConfig | None = None) -> bytes:
    """The request as bytes for Redis; UnserializableRequest if a worker could not run it."""
    config = config or config_of(spider)
    data = _to_dict(request, spider)
    scheme = _scheme(request.url)
    if scheme not in config.allowed_schemes:
        raise UnserializableRequest(
            f"cannot store {request}: its scheme {scheme!r} is not in FLEET_ALLOWED_SCHEMES "
            f"({', '.join(sorted(config.allowed_schemes))}); add it there to crawl such URLs "
            f"through the frontier"
        )
    for field in ("callback", "errback"):
        name = data.get(field)
        if name and name != _NO_CALLBACK and spider is not None and not callback_allowed(spider, name):
            raise UnserializableRequest(
                f"cannot store {request}: its {field} {name!r} is {_not_a_callback(spider, name)}"
            )
    _meta_to_store(request, data, config)
    try:
        blob = _compact(data)
    except (TypeError, ValueError, OverflowError) as exc:
        # only now walk the values, to name the one that cannot be stored
        for field in ("meta", "cb_kwargs"):
            bad = _find_unpackable(data[field], f"{field}[")
            if bad:
                raise UnserializableRequest(
                    f"cannot store {request}: {bad} (msgpack carries None, bool, int, "
                    f"float, str, bytes, list, tuple and dict values only)"
                ) from None
        raise UnserializableRequest(f"cannot store {request}: {exc}") from None
    if len(blob) > config.max_request_bytes:
        raise RequestTooLarge(
            f"cannot store {request}: request too large, {len(blob)} bytes encoded "
            f"({_largest_fields(data)}), more than FLEET_MAX_REQUEST_BYTES = "
            f"{config.max_request_bytes} (Redis itself takes at most 512 MB per value)"
        )
    return blob


def _meta_to_store(request: Request, data: dict[str, Any], config: FleetConfig) -> None:
    """Drop what is this process's own from meta; refuse guarded keys not trusted."""
    meta = data["meta"]
    drop = {LEASE_META_KEY} & meta.keys()
    if "proxy" not in config.trusted_meta and meta.get("_scheme_proxy"):
        # HttpProxyMiddleware took this proxy from the environment (a retry or redirect
        # of a request it handled): it sets it again when the request comes back, so
        # neither it nor its credentials go to Redis
        drop |= {"proxy", *_PROXY_COMPANIONS} & meta.keys()
        if "_auth_proxy" in meta:
            data["headers"] = {k: v for k, v in data["headers"].items()
                               if k.lower() != b"proxy-authorization"}
    for key in meta.keys() - drop:
        if _guarded(key) and _guard(key) not in config.trusted_meta:
            guard = _guard(key)
            raise UnserializableRequest(
                f"cannot store {request}: meta[{key!r}] is not stored in Redis by default, "
                f"since whoever can write there could then {GUARDED_META[guard]}; add "
                f"{guard!r} to FLEET_TRUSTED_META to store it"
            )
    if drop:
        data["meta"] = {k: v for k, v in meta.items() if k not in drop}


def _guarded(key: Any) -> bool:
    return key in GUARDED_META or key in _PROXY_COMPANIONS


def _guard(key: str) -> str:
    """The FLEET_TRUSTED_META entry that covers a guarded key."""
    return "proxy" if key in _PROXY_COMPANIONS else key


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def _largest_fields(data: dict[str, Any]) -> str:
    sizes = {}
    for field in ("meta", "cb_kwargs", "body", "headers", "cookies", "url"):
        try:
            sizes[field] = len(msgpack.packb(data.get(field), use_bin_type=True))
        except (TypeError, ValueError, OverflowError):
            continue
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:2]
    return ", ".join(f"{field} {size} bytes" for field, size in top)


def callback_allowed(spider: Spider, name: str) -> bool:
    """Whether ``name`` may be called as a callback or errback of this spider.

    Only a plain method that a class of the spider's MRO below ``scrapy.Spider`` defines
    (the user's classes and mixins, and Scrapy's generic spiders such as CrawlSpider,
    whose links carry ``_callback``/``_errback``). Never a dunder, a classmethod or
    staticmethod, an instance attribute, or a hook Scrapy calls itself (``start``,
    ``closed``, ``update_settings``...).
    """
    cls = type(spider)
    if (cls, name) in _CALLBACKS_OK:
        return name not in vars(spider)
    if name in _SPIDER_HOOKS or (name.startswith("__") and name.endswith("__")):
        return False
    for klass in cls.__mro__:
        if klass is Spider:
            return False
        if name in vars(klass):
            if not isinstance(vars(klass)[name], FunctionType):
                return False
            _CALLBACKS_OK.add((cls, name))
            return name not in vars(spider)
    return False


def _not_a_callback(spider: Spider, name: str) -> str:
    if name in _SPIDER_HOOKS or (name.startswith("__") and name.endswith("__")):
        return "a method Scrapy itself calls, never a callback read from Redis"
    return (f"not a method that {type(spider).__name__} (or a class it inherits from, "
            f"below scrapy.Spider) defines")


def _to_dict(request: Request, spider: Spider | None) -> dict[str, Any]:
    """``Request.to_dict``, with a fast path for the callback names.

    Scrapy finds a callback's name by scanning every member of the spider; a bound
    method of the spider already knows its name, which we only confirm.
    """
    callback, errback = request.callback, request.errback
    names = [
        None if c is None or c is NO_CALLBACK or spider is None else _own_method_name(spider, c)
        for c in (callback, errback)
    ]
    fast = spider is not None and all(
        name is not None or c is None or c is NO_CALLBACK
        for name, c in zip(names, (callback, errback))
    )
    if not fast:
        try:
            data = request.to_dict(spider=spider)
        except ValueError as exc:  # a callback that is not a method of the spider
            raise UnserializableRequest(f"cannot store {request}: {exc}") from None
    else:
        data = {
            "url": request.url,
            "callback": names[0],
            "errback": names[1],
            "headers": dict(request.headers),
        }
        for attr in request.attributes:
            data.setdefault(attr, getattr(request, attr))
        if type(request) is not Request:
            data["_class"] = f"{type(request).__module__}.{type(request).__name__}"
    if callback is NO_CALLBACK:
        data["callback"] = _NO_CALLBACK
    return data


def _own_method_name(spider: Spider, method: Any) -> str | None:
    name = getattr(method, "__name__", None)
    if name and getattr(spider, name, None) == method:
        return name
    return None


def decode(blob: bytes | None, spider: Spider | None, config: FleetConfig | None = None) -> Request:
    """A request read from Redis, checked as the module docstring says; else InvalidEntry."""
    if not blob or not (blob[0] in MAGIC or blob.startswith(MAGIC_V1)):
        raise InvalidEntry("not a scrapy-fleet request (missing format marker)")
    config = config or config_of(spider)
    if len(blob) > config.max_request_bytes:
        raise InvalidEntry(f"{len(blob)} bytes, more than FLEET_MAX_REQUEST_BYTES")
    v1 = blob.startswith(MAGIC_V1)
    try:
        data = msgpack.unpackb(blob[len(MAGIC_V1) if v1 else 1:], raw=False,
                               strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidEntry(f"undecodable payload: {exc.__class__.__name__}") from None
    if not v1:
        data = _expand(blob[0] - MAGIC[0], data)
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise InvalidEntry("payload is not a request mapping")
    for field, types in _FIELDS.items():
        if field in data and not isinstance(data[field], types):
            raise InvalidEntry(f"field {field!r} has type {type(data[field]).__name__}")
    scheme = _scheme(data["url"])
    if scheme not in config.allowed_schemes:
        raise InvalidEntry(f"URL scheme {scheme!r} is not in FLEET_ALLOWED_SCHEMES")
    for key in data.get("meta") or {}:
        if _guarded(key) and _guard(key) not in config.trusted_meta:
            raise InvalidEntry(f"meta key {key!r} is not in FLEET_TRUSTED_META")
    _request_class(data.get("_class"))
    for field in ("callback", "errback"):
        name = data.get(field)
        if name and name != _NO_CALLBACK:
            _check_method(spider, name)
    no_callback = data.get("callback") == _NO_CALLBACK
    if no_callback:
        data["callback"] = None
    try:
        request = request_from_dict(data, spider=spider)
    except Exception as exc:
        raise InvalidEntry(f"cannot build request: {exc}") from None
    if _scheme(request.url) not in config.allowed_schemes:  # as the Request parsed it
        raise InvalidEntry(f"URL scheme {_scheme(request.url)!r} is not in FLEET_ALLOWED_SCHEMES")
    if no_callback:
        request.callback = NO_CALLBACK
    return request


def _compact(data: dict[str, Any]) -> bytes:
    """The ``to_dict`` mapping in format 2 (see ``_LAYOUT``); msgpack may raise."""
    url = data["url"]
    code = next((c for c in (4, 3, 2, 1) if url.startswith(_URL_PREFIXES[c])), 0)
    out: list[Any] = [url[len(_URL_PREFIXES[code]):]]
    for name, default in _LAYOUT:
        value = data.get(name, default)
        if name == "callback" and value == "parse":
            value = _PARSE
        out.append(None if value == default else value)
    extra = {k: v for k, v in data.items() if k not in _LAYOUT_NAMES}
    if extra:
        out.append(extra)
    else:
        while out[-1] is None:
            out.pop()
    return MAGIC[code:code + 1] + msgpack.packb(out, use_bin_type=True)


def _expand(code: int, array: Any) -> dict[str, Any]:
    """A format 2 array back as a ``to_dict`` mapping, shape checked (values are checked
    by the caller, as for the first format)."""
    if not isinstance(array, list) or not 1 <= len(array) <= 2 + len(_LAYOUT):
        raise InvalidEntry("payload is not a request array")
    if not isinstance(array[0], str):
        raise InvalidEntry("payload holds no URL")
    data: dict[str, Any] = {"url": _URL_PREFIXES[code] + array[0]}
    for (name, _), value in zip(_LAYOUT, array[1:]):
        if value is not None:
            data[name] = value
    if type(data.get("callback")) is int and data["callback"] == _PARSE:
        data["callback"] = "parse"
    if len(array) == 2 + len(_LAYOUT):
        extra = array[-1]
        if not isinstance(extra, dict) or not all(
                isinstance(k, str) and k not in _LAYOUT_NAMES for k in extra):
            raise InvalidEntry("payload's extra attributes are not a mapping of new names")
        data.update(extra)
    return data


def _request_class(path: Any) -> type[Request]:
    """Only Request subclasses whose module is already imported: nothing is imported here."""
    if path is None:
        return Request
    module_name, _, name = str(path).rpartition(".")
    module = sys.modules.get(module_name)
    cls = getattr(module, name, None) if module is not None else None
    if not (isinstance(cls, type) and issubclass(cls, Request)):
        raise InvalidEntry(f"request class {path!r} is not an imported Request subclass")
    return cls


def _check_method(spider: Spider | None, name: str) -> None:
    if spider is None:
        raise InvalidEntry(f"callback {name!r} needs a spider")
    if not callback_allowed(spider, name):
        raise InvalidEntry(f"callback {name!r} is {_not_a_callback(spider, name)}")


def _find_unpackable(value: Any, path: str) -> str | None:
    """The first value msgpack cannot carry, as ``meta['key']...``; None if all are fine."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, bytes, int)):
                return f"{path}{key!r}] has a key of type {type(key).__name__}"
            found = _find_unpackable(item, f"{path}{key!r}][")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_unpackable(item, f"{path}{index}][")
            if found:
                return found
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        return f"{path.rstrip('[')} holds an integer too large to store"
    if isinstance(value, _SCALARS):
        return None
    return f"{path.rstrip('[')} holds a {type(value).__name__}"
