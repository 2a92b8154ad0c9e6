"""scrapy-redis's example spiders, moved to the fleet (docs/migrating.md), run by
``scrapy fleet`` from the repository root against local sites.

``myspider_redis`` and ``mycrawler_redis`` keep scrapy-redis's fixed keys
(``myspider:start_urls``, ``mycrawler:start_urls``), which win over
``REDIS_START_URLS_KEY``: each test therefore runs on a Redis database of its own (not
DB 0, which every other test uses, each under its own key prefix), checks that it is
empty first, and empties it after.

No test waits for a clock. A keep-alive crawl ends ``FLEET_IDLE_TIMEOUT`` seconds after
it last had work, so each crawl is given its first request with ``scrapy fleet feed``
*before* it starts: it has work from its first moment. In the ``myspider_redis`` test
that first request is a page that answers only when the test opens a gate: while a
worker waits for it, a request is leased and the crawl cannot go idle, however slowly
the test pushes the rest.

The last test keeps the docs' listings of the two spiders equal to the files.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis

from conftest import REPO, WAIT, Fleet, scrapy, scrapy_args, wait_for
from local_site import HTML, LinkedSite, LocalServer, LocalSite, send
from test_redis_spider import redis_cli

DOCS = REPO / "docs" / "migrating.md"
SPIDERS = REPO / "fleet_examples" / "spiders"


# --- a Redis database of the test's own -------------------------------------------------


def with_db(url: str, number: int) -> str:
    """``url`` on database ``number``: ``?db=N`` for ``unix://``, the path for ``redis://``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"] + [("db", str(number))]
        return f"unix://{parts.path}?{urlencode(query)}"  # urlunsplit would drop the "//"
    return urlunsplit(parts._replace(path=f"/{number}"))


class Database:
    def __init__(self, server_url: str, number: int) -> None:
        self.server_url = server_url
        self.number = number
        self.url = with_db(server_url, number)
        self.client = redis.Redis.from_url(self.url)

    def cli(self, *args: str) -> str:
        """The real redis-cli, on this database."""
        return redis_cli(self.server_url, "-n", str(self.number), *args)


@pytest.fixture
def database(redis_server: str) -> Iterator[Callable[[int], Database]]:
    opened: list[Database] = []

    def open_db(number: int) -> Database:
        db = Database(redis_server, number)
        assert db.client.dbsize() == 0, f"Redis DB {number} is not empty: another test uses it"
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        db.client.flushdb()
        db.client.close()


# --- the sites --------------------------------------------------------------------------


class Site(LinkedSite):
    """A LinkedSite (page i links to 2i+1, 2i+2 and 0) with two extras: ``/gate``, which
    answers only once :attr:`gate` is set, and, with ``offsite``, a link on page 0 to
    another host (a server on 127.0.0.2), which ``-a domain=127.0.0.1`` must keep out."""

    def __init__(self, pages: int, offsite: str | None = None) -> None:
        super().__init__(pages)
        self.gate = threading.Event()
        self.offsite = offsite

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/gate":
            with self._lock:
                self.fetches["/gate"] += 1
            self.gate.wait(WAIT * 2)
            send(handler, 200, b"<html><title>gate</title></html>", HTML)
        elif handler.path == "/page/0" and self.offsite:
            with self._lock:
                self.fetches["/page/0"] += 1
            links = "".join(f'<a href="/page/{c}">p{c}</a> ' for c in (1, 2) if c < self.pages)
            body = f'<html><title>page 0</title><body>{links}<a href="{self.offsite}">away</a>'
            send(handler, 200, (body + "</body></html>").encode(), HTML)
        else:
            super()._answer(handler)

    def stop(self) -> None:
        self.gate.set()  # no handler thread left waiting
        super().stop()

    def counts(self) -> Counter[str]:
        """Fetches per path (robots.txt left out)."""
        with self._lock:
            return Counter({p: n for p, n in self.fetches.items() if p != "/robots.txt"})


class Offsite(LocalSite):
    """A server on 127.0.0.2 that only counts what reaches it."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.servers = [LocalServer(self._answer, host="127.0.0.2")]
        self.url = self.servers[0].url

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        self.hits.append(handler.path)
        send(handler, 200, b"<html><title>offsite</title></html>", HTML)


# --- running the example project ----------------------------------------------------------


@pytest.fixture
def fleet() -> Iterator[Callable[..., Fleet]]:
    """``fleet(SPIDER, ARGS...)``: ``scrapy fleet`` from the repository root; one still
    running when the test ends (it failed) is stopped as Ctrl-C stops it."""
    started: list[Fleet] = []

    def start(*args: str) -> Fleet:
        started.append(Fleet(REPO, list(args)))
        return started[-1]

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGINT)
            running.finish()


def output_items(path: Path) -> list[dict]:
    """The complete lines of a JSON-lines output, read while workers may be writing it."""
    if not path.exists():
        return []
    text = path.read_text("utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]


def feed(spider: str, settings: dict[str, object], *entries: str,
         args: dict[str, str] | None = None, file: Path | None = None) -> str:
    """``scrapy fleet feed SPIDER ENTRY... [-f FILE]`` from the repository root; its report."""
    more = ["-f", str(file)] if file is not None else []
    result = scrapy(REPO, "fleet", "feed", spider, *entries, *more,
                    *scrapy_args(settings, args))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def run_settings(tmp_path: Path, db: Database, key_prefix: str) -> dict[str, object]:
    return {"REDIS_URL": db.url, "FLEET_KEY_PREFIX": key_prefix,
            "FLEET_DATA_DIR": str(tmp_path / "data"),
            "FLEET_OUTPUT": str(tmp_path / "output" / "%(name)s.jsonl"),
            "FLEET_IDLE_TIMEOUT": 2, "FLEET_PROGRESS_INTERVAL": 1}


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_myspider_redis_crawls_what_redis_cli_and_fleet_feed_push_once_each(
        tmp_path: Path, database, fleet, serve, key_prefix: str) -> None:
    site = serve(Site(10))
    db = database(11)
    run = run_settings(tmp_path, db, key_prefix)
    page = lambda n: f"{site.url}/page/{n}"  # noqa: E731
    gate = {"url": f"{site.url}/gate", "meta": {"download_timeout": WAIT * 4}}

    # the crawl does not exist yet: the gate waits in a new one for the fleet
    report = feed("myspider_redis", run, json.dumps(gate))
    assert "Fed 1 entry into a new crawl of 'myspider_redis'" in report, report
    workers = fleet("myspider_redis", "-n", "2", *scrapy_args(run))
    wait_for(lambda: site.counts()["/gate"], what="a worker waiting for the gate")

    # scrapy-redis's producers: plain URLs and JSON objects into myspider:start_urls
    missing = {"url": f"{site.url}/missing/1", "meta": {"handle_httpstatus_all": True}}
    db.cli("LPUSH", "myspider:start_urls", page(1), page(2), json.dumps(missing),
           f"{site.url}/missing/2")
    wait_for(lambda: {"/page/1", "/page/2", "/missing/1", "/missing/2"} <= set(site.counts()),
             what="the pushed URLs fetched")

    # scrapy fleet feed into the running crawl: arguments and a file; page 1 is known
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{page(4)}\n\n{page(1)}\n" + json.dumps({"url": page(5), "meta": {"job": 7}}) + "\n")
    report = feed("myspider_redis", run, page(3), file=urls)
    assert "Fed 4 entries into the crawl of 'myspider_redis'" in report, report
    assert "3 accepted, 1 duplicate, 0 bad" in report, report

    # a URL pushed again after it was crawled is a duplicate too (page 6 comes with it,
    # in one LPUSH, so one batch: once page 6 is fetched, page 2's copy was dropped)
    db.cli("LPUSH", "myspider:start_urls", page(2), page(6))
    expected = {page(n) for n in range(1, 7)} | {missing["url"]}
    wait_for(lambda: expected <= {i["url"] for i in output_items(tmp_path / "output" / "myspider_redis.jsonl")},
             what="an item for every pushed page")

    site.gate.set()  # now the crawl may go idle: it ends FLEET_IDLE_TIMEOUT later
    assert workers.wait() == 0, workers.text
    items = output_items(tmp_path / "output" / "myspider_redis.jsonl")
    assert Counter(i["url"] for i in items) == Counter(expected | {gate["url"]}), items
    assert {i["url"]: i["name"] for i in items}[page(3)] == "page 3"
    # missing/2 (a 404 without handle_httpstatus_all) gave no item, but was fetched once
    assert site.counts() == Counter({p: 1 for p in [f"/page/{n}" for n in range(1, 7)]
                                     + ["/gate", "/missing/1", "/missing/2"]}), site.counts()
    assert db.client.exists("myspider:start_urls") == 0
    assert db.client.exists(f"{key_prefix}:feeding:{{myspider:start_urls}}") == 0
    assert db.client.hget(f"{key_prefix}:{{myspider_redis}}:state", "ended_by") == b"idle_timeout"
    assert re.search(r"keep-alive: waiting for new entries \(ends after 2 s idle\)", workers.text), workers.text


@pytest.mark.slow
def test_mycrawler_redis_follows_its_rules_through_the_whole_site(
        tmp_path: Path, database, fleet, serve, key_prefix: str) -> None:
    offsite = serve(Offsite())
    site = serve(Site(15, offsite=f"{offsite.url}/away"))
    db = database(12)
    run = run_settings(tmp_path, db, key_prefix)
    domain = {"domain": "127.0.0.1"}

    report = feed("mycrawler_redis", run, f"{site.url}/page/0", args=domain)
    assert "Fed 1 entry into a new crawl of 'mycrawler_redis'" in report, report
    workers = fleet("mycrawler_redis", "-n", "2", *scrapy_args(run, domain))
    assert workers.wait() == 0, workers.text  # the whole site, then FLEET_IDLE_TIMEOUT idle

    assert site.counts() == Counter({f"/page/{n}": 1 for n in range(15)}), site.counts()
    assert offsite.hits == []  # allowed_domains = ["127.0.0.1"] kept 127.0.0.2 out
    items = output_items(tmp_path / "output" / "mycrawler_redis.jsonl")
    # every page the rule reached (parse_page); the fed page 0 is the start request, which
    # CrawlSpider parses with parse_start_url (no item), and the links back to it are
    # duplicates of it on the fleet
    assert Counter(i["url"] for i in items) == Counter(f"{site.url}/page/{n}" for n in range(1, 15))
    assert all(i["name"] == f"page {i['url'].rsplit('/', 1)[1]}" for i in items), items
    assert db.client.hget(f"{key_prefix}:{{mycrawler_redis}}:state", "ended_by") == b"idle_timeout"


def diff_blocks(text: str) -> list[list[str]]:
    return [block.split("\n") for block in re.findall(r"```diff\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("spider", ["myspider_redis", "mycrawler_redis"])
def test_the_docs_show_each_spider_as_it_is_and_what_changed(spider: str) -> None:
    """docs/migrating.md lists each spider as a diff against scrapy-redis's: its "after"
    side is the file in fleet_examples, and only the import and allowed_domains change."""
    code = (SPIDERS / f"{spider}.py").read_text("utf-8")
    [block] = [b for b in diff_blocks(DOCS.read_text("utf-8")) if f'name = "{spider}"' in "\n".join(b)]
    after = "".join(line[1:] + "\n" for line in block if line[:1] in (" ", "+"))
    assert after == code
    changed = [line[0] + line[1:].strip() for line in block if line[:1] in ("-", "+")]
    assert [line for line in changed if "import" in line] == [
        f"-from scrapy_redis.spiders import {'RedisCrawlSpider' if 'crawler' in spider else 'RedisSpider'}",
        f"+from scrapy_fleet.spiders import {'RedisCrawlSpider' if 'crawler' in spider else 'RedisSpider'}"]
    assert [line for line in changed if "import" not in line] == [
        '-self.allowed_domains = filter(None, domain.split(","))',
        '+self.allowed_domains = list(filter(None, domain.split(",")))']
