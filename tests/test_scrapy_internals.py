"""The Scrapy internals scrapy-fleet relies on are all in the installed Scrapy
(scrapy_fleet/scrapy_internals.py): an upgrade that drops one fails here, by name."""

from __future__ import annotations

import pytest

from scrapy_fleet.scrapy_internals import INTERNALS, Internal, missing


@pytest.mark.parametrize("entry", INTERNALS, ids=[e.name for e in INTERNALS])
def test_every_internal_we_use_is_still_there(entry: Internal):
    assert entry.why, f"{entry.name}: say why no public API serves"
    problem = missing(entry)
    assert problem is None, f"{problem}; scrapy-fleet uses it because: {entry.why}"


def test_a_vanished_internal_is_reported_by_name():
    # instance attributes count (assigned in a method), as do methods and slots
    assert missing(Internal("scrapy.core.engine.ExecutionEngine", "downloader", "x")) is None
    assert missing(Internal("scrapy.core.downloader.Slot", "free_transfer_slots", "x")) is None
    gone = missing(Internal("scrapy.core.downloader.Downloader", "_no_such_thing", "x"))
    assert gone == "scrapy.core.downloader.Downloader._no_such_thing no longer exists in the installed Scrapy"
    gone = missing(Internal("scrapy.core.no_such_module.Thing", "attr", "x"))
    assert gone is not None and "scrapy.core.no_such_module.Thing.attr is gone" in gone
