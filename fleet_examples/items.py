"""Items of the example spiders.

An item class may declare ``dedupe_key``: the name (or a tuple of names) of the
field(s) that identify it. :class:`scrapy_fleet.pipelines.JsonLinesPipeline`
then writes an item with a given key only once per output file. Items without
a ``dedupe_key`` (or with the key field unset) are keyed by their request and
their place in its callback's output instead (``scrapy_fleet.itemkeys``).
"""

from __future__ import annotations

from typing import ClassVar

import scrapy


class SiteItem(scrapy.Item):
    """One listed site of a top-sites list, crawled or failed (spider ``alexa``)."""

    dedupe_key: ClassVar[str | tuple[str, ...]] = "domain"

    rank = scrapy.Field()  # int, the row's rank
    domain = scrapy.Field()  # IDNA host (+ ":port") plus the row's path, if any
    url = scrapy.Field()  # the start URL, http://<domain>/
    final_url = scrapy.Field()  # after redirects; null if nothing was received
    status = scrapy.Field()  # int HTTP status, or null
    title = scrapy.Field()  # the <title> text, or null
    error = scrapy.Field()  # null on success, else e.g. "timeout", "dns", "http 503"
    crawled_at = scrapy.Field()  # ISO 8601 UTC time the outcome was known


class LinkedPageItem(SiteItem):
    """A page reached from a listed site by ``-a follow=REGEX`` (spider ``alexa``)."""

    dedupe_key: ClassVar[str | tuple[str, ...]] = "url"

    depth = scrapy.Field()  # int, 1 for links on the listed page, 2 for theirs, ...


class FilmItem(scrapy.Item):
    """One film of a Maoyan board (spider ``maoyan``)."""

    dedupe_key: ClassVar[str | tuple[str, ...]] = "index"

    index = scrapy.Field()  # int, the rank on the board
    movie_id = scrapy.Field()  # int, from /films/ID
    title = scrapy.Field()
    actors = scrapy.Field()  # list of names
    release_time = scrapy.Field()  # text after 上映时间：, e.g. "1994-09-10(加拿大)" or "1992"
    score = scrapy.Field()  # float or null
    image = scrapy.Field()  # poster URL (img.board-img data-src)
