"""The alexa spider, crawled against a fake web on 127.0.0.1 (a forward proxy for every host)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse, Request
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error as net_error
from twisted.python.failure import Failure

from conftest import FIXTURES, free_port, run_crawl, run_fleet
from fleet_examples.spiders.alexa import failure_reason
from local_site import FakeWeb

GBK_TITLE = "百度一下，你就知道"
UTF8_TITLE = "Ünïcødé — 你好"


@pytest.fixture
def web(serve) -> FakeWeb:
    return serve(FakeWeb())


def by_domain(items: list[dict]) -> dict[str, dict]:
    return {item["domain"]: item for item in items}


@pytest.mark.slow
def test_every_listed_site_gives_one_item_whatever_happens(web: FakeWeb, tmp_path: Path) -> None:
    refused = free_port()  # nothing listens: connection refused
    web.add("http://ok.test/", f"<html><head><title>  {UTF8_TITLE}\n </title></head></html>")
    web.add(
        "http://gbk-meta.test/",
        f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=gb2312"><title>{GBK_TITLE}</title>'.encode("gbk"),
    )
    web.add("http://gbk-header.test/", f"<html><title>{GBK_TITLE}</title>".encode("gbk"), content_type="text/html; charset=GBK")
    web.add(  # no charset anywhere: Scrapy's detection has to recognise it
        "http://gbk-undeclared.test/",
        f"<html><head><title>{GBK_TITLE}</title></head><body>欢迎访问我们的网站，这里有很多中文内容。</body></html>".encode("gbk"),
    )
    web.redirect("http://redirect.test/", "http://www.redirect.test/home")
    web.add("http://www.redirect.test/home", "<title>Moved here</title>")
    web.add("http://notfound.test/", "<title>Not Found</title>", status=404)
    web.add("http://broken.test/", "oops", status=500)
    web.add("http://busy.test/", "busy", status=503)
    web.hang("http://slow.test/")
    web.add("http://private.test/robots.txt", "User-agent: *\nDisallow: /\n", content_type="text/plain")
    web.add("http://private.test/", "<title>secret</title>")
    web.add("http://zhidao.test/user/Admin", "<title>user page</title>")
    web.add("http://xn--bcher-kva.test/", "<title>books</title>")
    web.add("http://notitle.test/", "<html><body>no title</body></html>")
    web.add("http://image.test/", b"\x89PNG\r\n\x1a\n\x00\x00", content_type="image/png")
    web.add("http://203.0.113.9/", "<title>by ip</title>")
    rows = [
        "\ufeffrank,domain",
        "1,ok.test",
        "2,gbk-meta.test",
        "3,GBK-Header.test",
        "3,gbk-undeclared.test",
        "",
        "4,redirect.test",
        "5,notfound.test",
        "6,broken.test",
        "7,busy.test",
        "8,slow.test",
        "9,private.test",
        f"10,127.0.0.1:{refused}",
        "11,zhidao.test/user/Admin",
        "12,bücher.test",
        "13,notitle.test",
        "14,image.test",
        "15,203.0.113.9",
        "16,ok.test",
        "17,_wildcard_.test",
        "garbage line without comma",
        "x,not-a-rank.test",
        "18,",
        "19,has space.test",
        "20,single-label",
    ]
    listing = tmp_path / "list.csv"
    listing.write_bytes("\r\n".join(rows).encode("utf-8"))  # CRLF, no trailing newline

    result = run_crawl(
        "alexa",
        tmp_path,
        web,
        args={"list": str(listing), "max_urls": "0"},
        settings={"DOWNLOAD_TIMEOUT": 1},
    )

    assert result.returncode == 0, result.log[-3000:]
    items = by_domain(result.items)
    assert len(result.items) == len(items) == 16
    ok = items["ok.test"]
    assert ok["rank"] == 1 and ok["url"] == "http://ok.test/" and ok["final_url"] == "http://ok.test/"
    assert ok["status"] == 200 and ok["title"] == UTF8_TITLE and ok["error"] is None
    assert ok["crawled_at"].endswith("+00:00")
    assert items["gbk-meta.test"]["title"] == GBK_TITLE
    assert items["gbk-header.test"]["title"] == GBK_TITLE
    assert items["gbk-undeclared.test"]["title"] == GBK_TITLE
    moved = items["redirect.test"]
    assert moved["final_url"] == "http://www.redirect.test/home" and moved["title"] == "Moved here"
    assert moved["url"] == "http://redirect.test/" and moved["status"] == 200
    expected_errors = {
        "notfound.test": ("http 404", 404),
        "broken.test": ("http 500", 500),
        "busy.test": ("http 503", 503),
        "slow.test": ("timeout", None),
        "private.test": ("robots.txt", None),
        f"127.0.0.1:{refused}": ("connection refused", None),
    }
    for domain, (error, status) in expected_errors.items():
        assert (items[domain]["error"], items[domain]["status"]) == (error, status), domain
    assert items["notfound.test"]["title"] == "Not Found"  # error pages keep their title
    assert items["slow.test"]["final_url"] is None and items["slow.test"]["title"] is None
    assert items["zhidao.test/user/Admin"]["url"] == "http://zhidao.test/user/Admin"
    assert items["zhidao.test/user/Admin"]["title"] == "user page"
    assert items["xn--bcher-kva.test"]["title"] == "books"
    assert items["notitle.test"]["title"] is None and items["notitle.test"]["error"] is None
    assert items["image.test"]["title"] is None and items["image.test"]["status"] == 200
    assert items["203.0.113.9"]["title"] == "by ip"
    assert web.count("http://private.test/") == 0  # robots.txt obeyed
    assert web.count("http://busy.test/") == 2  # RETRY_TIMES = 1: the spider's broad-crawl settings
    # header, blank line, duplicate, bad hostname x2, garbage, bad rank, empty domain, single label
    assert result.stats["alexa/rows_skipped"] == 9
    assert result.stats["alexa/rows_skipped/duplicate"] == 1
    assert result.stats["alexa/rows_skipped/header"] == 1
    assert result.stats["alexa/rows_skipped/blank"] == 1
    assert "Skipping list line 19 (duplicate): '16,ok.test'" in result.log


@pytest.mark.slow
def test_max_urls_stops_early_and_default_is_500(tmp_path: Path, web: FakeWeb) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{rank},site{rank}.test\n" for rank in range(1, 601)))
    few = run_crawl("alexa", tmp_path / "few", web, args={"list": str(listing), "max_urls": "3"})
    assert sorted(item["rank"] for item in few.items) == [1, 2, 3]
    assert {item["error"] for item in few.items} == {"http 404"}
    default = run_crawl("alexa", tmp_path / "default", web, args={"list": str(listing)}, settings={"LOG_LEVEL": "INFO"})
    assert default.returncode == 0, default.log[-2000:]
    assert len(default.items) == 500 and default.stats["alexa/sites_queued"] == 500


@pytest.mark.slow
def test_zip_list_and_download_once_from_http_and_file_urls(tmp_path: Path, web: FakeWeb) -> None:
    web.add("http://one.test/", "<title>one</title>")
    csv_bytes = b"1,one.test\n2,two.test"
    archive = tmp_path / "top-1m.csv.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top-1m.csv", csv_bytes)
    web.add("http://lists.test/top-1m.csv.zip", archive.read_bytes(), content_type="application/zip")

    local = run_crawl("alexa", tmp_path / "zip", web, args={"list": str(archive)})
    assert {(i["domain"], i["title"]) for i in local.items} == {("one.test", "one"), ("two.test", None)}

    data = tmp_path / "shared-data"
    url = "http://lists.test/top-1m.csv.zip"
    first = run_crawl("alexa", tmp_path / "http1", web, args={"list": url}, settings={"FLEET_DATA_DIR": str(data)})
    second = run_crawl("alexa", tmp_path / "http2", web, args={"list": url}, settings={"FLEET_DATA_DIR": str(data)})
    assert len(first.items) == len(second.items) == 2
    assert web.count(url) == 1, "the list is downloaded once, then reused from FLEET_DATA_DIR"
    assert list((data / "lists").iterdir())[0].read_bytes() == archive.read_bytes()

    by_file = run_crawl("alexa", tmp_path / "file", web, args={"list": archive.as_uri()})
    assert {i["domain"] for i in by_file.items} == {"one.test", "two.test"}
    assert len(list((tmp_path / "file" / "data" / "lists").iterdir())) == 1


@pytest.mark.slow
def test_list_download_failure_is_an_error_not_an_empty_success(tmp_path: Path, web: FakeWeb) -> None:
    result = run_crawl("alexa", tmp_path, web, args={"list": "http://lists.test/missing.csv"})
    assert result.items == []
    assert result.stats["alexa/list_errors"] == 1
    assert "cannot download the list http://lists.test/missing.csv: HTTP 404" in result.log


@pytest.mark.slow
@pytest.mark.parametrize(
    "fixture",
    ["alexa_top-1m_head2000_SoumyaParida-webcrawlTest.csv", "tranco_top-1m_head2000_kmikholap-dns-gen.csv"],
)
def test_real_list_heads(fixture: str, tmp_path: Path, web: FakeWeb) -> None:
    # Nothing is routed: every site answers 404 from the fake web; no request leaves the machine.
    result = run_crawl(
        "alexa", tmp_path, web, args={"list": str(FIXTURES / "toplists" / fixture), "max_urls": "25"},
        settings={"LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 0, result.log[-2000:]
    assert [item["rank"] for item in sorted(result.items, key=lambda i: i["rank"])] == list(range(1, 26))
    assert {item["error"] for item in result.items} == {"http 404"}
    assert "alexa/rows_skipped" not in result.stats


@pytest.mark.slow
def test_follow_same_site_links_up_to_depth(tmp_path: Path, web: FakeWeb) -> None:
    web.add(
        "http://deep.test/",
        '<title>home</title><a href="/news/1">n1</a><a href="/about">about</a>'
        '<a href="http://other.test/news/9">offsite</a>',
    )
    web.add("http://deep.test/news/1", '<title>news 1</title><a href="/news/2">n2</a>')
    web.add("http://deep.test/news/2", '<title>news 2</title><a href="/news/3">n3</a>')
    web.add("http://other.test/news/9", "<title>other</title>")
    listing = tmp_path / "list.csv"
    listing.write_text("1,deep.test\n")

    result = run_crawl("alexa", tmp_path, web, args={"list": str(listing), "follow": "/news/", "depth": "2"})

    pages = {item["url"]: item for item in result.items}
    assert set(pages) == {"http://deep.test/", "http://deep.test/news/1", "http://deep.test/news/2"}
    assert pages["http://deep.test/news/2"]["depth"] == 2 and pages["http://deep.test/news/2"]["title"] == "news 2"
    assert "depth" not in pages["http://deep.test/"]
    assert all(item["domain"] == "deep.test" and item["rank"] == 1 for item in result.items)
    assert web.count("http://other.test/news/9") == 0 and web.count("http://deep.test/about") == 0

    off = run_crawl("alexa", tmp_path / "off", web, args={"list": str(listing)})
    assert [item["url"] for item in off.items] == ["http://deep.test/"]


def _failure(exc: Exception) -> Failure:
    try:
        raise exc
    except Exception:
        return Failure()


def test_failure_reasons() -> None:
    response = HtmlResponse("http://x.test/", status=503, body=b"", request=Request("http://x.test/"))
    assert failure_reason(_failure(HttpError(response, "Ignoring"))) == "http 503"
    assert failure_reason(_failure(net_error.DNSLookupError("no such host"))) == "dns"
    assert failure_reason(_failure(net_error.TimeoutError())) == "timeout"
    assert failure_reason(_failure(net_error.TCPTimedOutError())) == "timeout"
    assert failure_reason(_failure(net_error.ConnectionRefusedError())) == "connection refused"
    assert failure_reason(_failure(IgnoreRequest("Forbidden by robots.txt"))) == "robots.txt"
    assert failure_reason(_failure(IgnoreRequest("other"))) == "ignored"
    assert failure_reason(_failure(ValueError("x"))) == "ValueError"
    from scrapy import exceptions

    assert failure_reason(_failure(exceptions.DownloadTimeoutError("t"))) == "timeout"
    assert failure_reason(_failure(exceptions.CannotResolveHostError("h"))) == "dns"
    assert failure_reason(_failure(exceptions.DownloadConnectionRefusedError("r"))) == "connection refused"


def serve_mixed_sites(web: FakeWeb, count: int) -> None:
    """``count`` sites: most answer with a title, every 7th 404s, every 11th redirects."""
    for n in range(1, count + 1):
        if n % 11 == 0:
            web.redirect(f"http://site{n}.test/", f"http://www.site{n}.test/")
            web.add(f"http://www.site{n}.test/", f"<title>站点 {n}</title>")
        elif n % 7 != 0:
            web.add(f"http://site{n}.test/", f"<title>站点 {n}</title>")


def check_mixed_items(items: list[dict], count: int) -> None:
    assert sorted(item["rank"] for item in items) == list(range(1, count + 1)), "one item per site, none twice"
    for item in items:
        n = item["rank"]
        if n % 7 == 0 and n % 11 != 0:
            assert (item["status"], item["error"]) == (404, "http 404")
        else:
            assert (item["title"], item["error"]) == (f"站点 {n}", None)
        if n % 11 == 0:
            assert item["final_url"] == f"http://www.site{n}.test/"


@pytest.mark.slow
def test_on_the_fleet_frontier(tmp_path: Path, web: FakeWeb, redis_url: str, key_prefix: str) -> None:
    serve_mixed_sites(web, 40)
    listing = tmp_path / "list.csv"
    listing.write_text("rank,domain\n" + "".join(f"{n},site{n}.test\n" for n in range(1, 41)) + "3,site3.test\n")
    frontier = {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix}
    result = run_crawl("alexa", tmp_path, web, args={"list": str(listing)}, frontier=frontier)
    assert result.returncode == 0, result.log[-3000:]
    assert "FleetScheduler" in result.log
    check_mixed_items(result.items, 40)
    assert result.stats["alexa/rows_skipped"] == 2


@pytest.mark.slow
def test_scrapy_fleet_with_two_workers(tmp_path: Path, web: FakeWeb, redis_url: str, key_prefix: str) -> None:
    serve_mixed_sites(web, 60)
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{n},site{n}.test\n" for n in range(1, 61)))
    frontier = {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix}
    result = run_fleet("alexa", tmp_path, web, 2, frontier, args={"list": str(listing)})
    assert result.returncode == 0, result.log[-3000:]
    check_mixed_items(result.items, 60)


@pytest.mark.slow
def test_the_list_is_pulled_lazily_not_all_scheduled_at_once(tmp_path: Path, web: FakeWeb) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("".join(f"{rank},site{rank}.test\n" for rank in range(1, 20001)))
    result = run_crawl(
        "alexa", tmp_path, web, args={"list": str(listing), "max_urls": "0"},
        settings={"CLOSESPIDER_ITEMCOUNT": 50, "LOG_LEVEL": "INFO"},
    )
    assert result.returncode == 0, result.log[-2000:]
    # Only about CONCURRENT_REQUESTS (16) ahead of the items, far from the 20000 rows
    assert 50 <= result.stats["alexa/sites_queued"] < 200
    assert result.stats["scheduler/enqueued"] < 200


def test_broad_crawl_settings_are_the_spiders_and_the_command_line_still_wins():
    from scrapy.settings import Settings

    from fleet_examples.spiders.alexa import AlexaSpider

    settings = Settings({"CONCURRENT_REQUESTS": 32}, priority="project")
    AlexaSpider.update_settings(settings)
    assert settings.getint("CONCURRENT_REQUESTS") == 200  # the spider's, over the project's
    assert settings.getbool("COOKIES_ENABLED") is False and settings.getint("RETRY_TIMES") == 1
    settings = Settings()
    settings.set("CONCURRENT_REQUESTS", 50, priority="cmdline")  # scrapy crawl -s
    AlexaSpider.update_settings(settings)
    assert settings.getint("CONCURRENT_REQUESTS") == 50
