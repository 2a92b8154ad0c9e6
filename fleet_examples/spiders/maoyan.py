"""``maoyan``: the Maoyan TOP100 board, one item per film.

    scrapy crawl maoyan [-a board_url=https://www.maoyan.com/board/4]
                        [-a blocked_retries=N] [-a blocked_backoff=SECONDS]

Fetches offsets 0, 10, ... 90. A verification page (a redirect to
``verify.maoyan.com``, title 猫眼验证中心) or any page without a board is
*blocked*: logged as an error with its URL, counted (``maoyan/blocked``) and
retried a limited number of times with exponential backoff, then given up
(``maoyan/gave_up``). It never becomes items, nor silence.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import scrapy
from parsel import Selector
from scrapy.crawler import Crawler
from scrapy.http import Response, TextResponse
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.python.failure import Failure
from w3lib.url import add_or_replace_parameter

from fleet_examples.items import FilmItem

logger = logging.getLogger(__name__)

DEFAULT_BOARD_URL = "https://www.maoyan.com/board/4"
BOARD_OFFSETS = range(0, 100, 10)
DEFAULT_BLOCKED_RETRIES = 3
DEFAULT_BLOCKED_BACKOFF = 10.0  # seconds before the first retry; doubles each time
VERIFY_HOST = "verify.maoyan.com"
VERIFY_TITLE = "猫眼验证中心"
BLOCKING_STATUSES = (403, 418)  # what Maoyan answers a crawler it refuses, besides the verify redirect

BROWSER_HEADERS = {
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8",
    "Upgrade-Insecure-Requests": "1",
}
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)


def _strip_prefix(text: str, *prefixes: str) -> str:
    text = text.strip()
    for prefix in prefixes:
        if text.startswith(prefix):
            return text[len(prefix) :].strip()
    return text


def _to_int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def movie_id_from_href(href: str | None) -> int | None:
    """``/films/1203`` (or a full URL to it) gives 1203."""
    parts = [p for p in urlparse(href or "").path.split("/") if p]
    if len(parts) >= 2 and parts[-2] == "films":
        return _to_int(parts[-1])
    return None


def parse_score(dd: Selector) -> float | None:
    """Integer part (with its dot) plus fraction; None where the board has no score."""
    text = "".join(dd.css("p.score i.integer::text, p.score i.fraction::text").getall()).strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None


def parse_actors(dd: Selector) -> list[str]:
    text = _strip_prefix("".join(dd.css("p.star::text").getall()), "主演：", "主演:")
    return [name.strip() for name in text.replace("，", ",").split(",") if name.strip()]


def parse_film(dd: Selector) -> FilmItem | None:
    """One ``dl.board-wrapper > dd``; None if it has no rank or title."""
    index = _to_int(dd.css("i.board-index::text").get())
    name = dd.css("p.name a")
    title = (name.attrib.get("title") or "".join(name.css("::text").getall())).strip() if name else ""
    if index is None or not title:
        return None
    release = _strip_prefix("".join(dd.css("p.releasetime::text").getall()), "上映时间：", "上映时间:")
    return FilmItem(
        index=index,
        movie_id=movie_id_from_href(name.attrib.get("href") or dd.css("a.image-link::attr(href)").get()),
        title=title,
        actors=parse_actors(dd),
        release_time=release or None,
        score=parse_score(dd),
        image=dd.css("img.board-img::attr(data-src)").get(),
    )


def board_entries(page: Selector) -> list[Selector]:
    return page.css("dl.board-wrapper > dd")


def blocked_reason(response: Response) -> str | None:
    """Why ``response`` is not a board page (verify redirect, verify title, no board), or None."""
    host = (urlparse(response.url).hostname or "").lower()
    if host == VERIFY_HOST or host.startswith("verify."):
        return f"redirected to {VERIFY_HOST}"
    if not isinstance(response, TextResponse):
        return "not an HTML page"
    if VERIFY_TITLE in (response.css("title::text").get() or ""):
        return f"verification page ({VERIFY_TITLE})"
    if not board_entries(response.selector):
        return "no board on the page"
    return None


class MaoyanSpider(scrapy.Spider):
    """Scrape the films of a Maoyan board (TOP100 by default)."""

    name = "maoyan"
    custom_settings = {
        "USER_AGENT": BROWSER_USER_AGENT,
        "DEFAULT_REQUEST_HEADERS": BROWSER_HEADERS,
    }

    def __init__(
        self,
        board_url: str = DEFAULT_BOARD_URL,
        blocked_retries: int | str = DEFAULT_BLOCKED_RETRIES,
        blocked_backoff: float | str = DEFAULT_BLOCKED_BACKOFF,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.board_url = board_url
        self.blocked_retries = int(blocked_retries)
        self.blocked_backoff = float(blocked_backoff)
        if self.blocked_retries < 0 or self.blocked_backoff < 0:
            raise ValueError("blocked_retries and blocked_backoff must be >= 0")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> MaoyanSpider:
        settings = crawler.settings
        kwargs.setdefault("blocked_retries", settings.getint("MAOYAN_BLOCKED_RETRIES", DEFAULT_BLOCKED_RETRIES))
        kwargs.setdefault("blocked_backoff", settings.getfloat("MAOYAN_BLOCKED_BACKOFF", DEFAULT_BLOCKED_BACKOFF))
        return super().from_crawler(crawler, *args, **kwargs)

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for offset in BOARD_OFFSETS:
            yield self.board_request(add_or_replace_parameter(self.board_url, "offset", str(offset)))

    def board_request(self, url: str, attempt: int = 0) -> scrapy.Request:
        # dont_filter on retries: the verify redirect target may repeat, and the
        # dupefilter would otherwise drop the retry silently.
        return scrapy.Request(
            url,
            callback=self.parse_board,
            errback=self.board_failed,
            meta={"board_page": url, "blocked_attempt": attempt},
            dont_filter=attempt > 0,
        )

    async def parse_board(self, response: Response) -> AsyncIterator[Any]:
        reason = blocked_reason(response)
        if reason is not None:
            retry = await self.blocked(response.meta, reason, response.url)
            if retry is not None:
                yield retry
            return
        films = 0
        for dd in board_entries(response.selector):
            film = parse_film(dd)
            if film is None:
                self.crawler.stats.inc_value("maoyan/films_incomplete")
                logger.warning("Incomplete film entry on %s: %s", response.url, dd.get()[:200])
                continue
            films += 1
            yield film
        self.crawler.stats.inc_value("maoyan/pages")
        self.crawler.stats.inc_value("maoyan/films", films)

    async def board_failed(self, failure: Failure) -> AsyncIterator[Any]:
        request = failure.request  # type: ignore[attr-defined]
        exc = failure.value
        if isinstance(exc, HttpError) and exc.response.status in BLOCKING_STATUSES:
            retry = await self.blocked(request.meta, f"HTTP {exc.response.status}", exc.response.url)
            if retry is not None:
                yield retry
            return
        self.crawler.stats.inc_value("maoyan/errors")
        reason = f"HTTP {exc.response.status}" if isinstance(exc, HttpError) else f"{type(exc).__name__}: {exc}"
        logger.error("Board page %s failed: %s", request.meta.get("board_page", request.url), reason)

    async def blocked(self, meta: dict[str, Any], reason: str, landed_url: str) -> scrapy.Request | None:
        """Count and log a blocked board page; after a backoff, the retry request (or None: give up)."""
        page = meta["board_page"]
        attempt = meta.get("blocked_attempt", 0)
        self.crawler.stats.inc_value("maoyan/blocked")
        where = page if landed_url == page else f"{page} (landed on {landed_url})"
        if attempt >= self.blocked_retries:
            self.crawler.stats.inc_value("maoyan/gave_up")
            logger.error("Blocked by Maoyan at %s: %s; gave up after %d retries", where, reason, attempt)
            return None
        delay = self.blocked_backoff * 2**attempt
        logger.error(
            "Blocked by Maoyan at %s: %s; retry %d/%d in %.1f s", where, reason, attempt + 1, self.blocked_retries, delay
        )
        if delay > 0:
            from twisted.internet import reactor
            from twisted.internet.task import deferLater

            await maybe_deferred_to_future(deferLater(reactor, delay, lambda: None))
        self.crawler.stats.inc_value("maoyan/blocked_retries")
        return self.board_request(page, attempt + 1)
