"""Requests to bytes and back, safely: ``Request.to_dict`` + msgpack, never pickle.

Anyone who can write to a shared Redis must not be able to run code in every worker, so
decoding only ever builds plain data, checks its shape, resolves callbacks to the
spider's own public methods, and instantiates only Request classes that are already
imported. Anything else is an :class:`InvalidEntry`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import msgpack
from scrapy import Request
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.request import request_from_dict

if TYPE_CHECKING:
    from scrapy import Spider

MAGIC = b"SF1"  # format marker and version; a pickle starts with b"\x80"
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


class UnserializableRequest(ValueError):
    """A request (usually a meta or cb_kwargs value) that the codec cannot carry."""


class InvalidEntry(ValueError):
    """A queue entry that is not a request this codec wrote: dropped, never executed."""


def encode(request: Request, spider: Spider | None) -> bytes:
    data = _to_dict(request, spider)
    meta = data["meta"]
    if LEASE_META_KEY in meta:
        data["meta"] = {k: v for k, v in meta.items() if k != LEASE_META_KEY}
    try:
        return MAGIC + msgpack.packb(data, use_bin_type=True)
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


def decode(blob: bytes | None, spider: Spider | None) -> Request:
    if not blob or not blob.startswith(MAGIC):
        raise InvalidEntry("not a scrapy-fleet request (missing format marker)")
    try:
        data = msgpack.unpackb(blob[len(MAGIC):], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidEntry(f"undecodable payload: {exc.__class__.__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        raise InvalidEntry("payload is not a request mapping")
    for field, types in _FIELDS.items():
        if field in data and not isinstance(data[field], types):
            raise InvalidEntry(f"field {field!r} has type {type(data[field]).__name__}")
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
    if no_callback:
        request.callback = NO_CALLBACK
    return request


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
    if name.startswith("_") or not callable(getattr(spider, name, None)):
        raise InvalidEntry(f"callback {name!r} is not a public method of the spider")


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
