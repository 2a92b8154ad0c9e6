"""The maoyan spider: the three real board pages parse exactly; blocked pages are never items nor silence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from parsel import Selector
from scrapy.http import HtmlResponse, Request

from conftest import FIXTURES, run_crawl, run_fleet
from fleet_examples.spiders.maoyan import blocked_reason, board_entries, movie_id_from_href, parse_film
from local_site import FakeWeb

BOARD = "http://www.maoyan.com/board/4"  # answered by the fake web through the proxy
VERIFY_URL = "http://verify.maoyan.com/verify?requestCode=5f1e0c&redirectURL=http%3A%2F%2Fwww.maoyan.com%2Fboard%2F4"
# Synthetic (no real copy exists, see fixtures/maoyan/PAGES_REPORT.md): the verify page's title and slider markup.
VERIFY_PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>猫眼验证中心</title></head>'
    '<body><div id="app"><div id="tcaptcha_transform"><iframe id="tcaptcha_iframe"></iframe></div></div></body></html>'
)
NO_BOARD_PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>TOP100榜 - 猫眼电影 - 一网打尽好电影</title></head>'
    '<body><div class="content"><dl class="board-wrapper"></dl></div></body></html>'
)

# (index, movie_id, title, actors joined by |, release_time, score, image), checked against the raw pages
EXPECTED = {
    "board4_offset0_2019-05-23_shiqinying.html": [
        [1, 1203, "霸王别姬", "张国荣|张丰毅|巩俐", "1993-01-01", 9.5, "https://p1.meituan.net/movie/20803f59291c47e1e116c11963ce019e68711.jpg@160w_220h_1e_1c"],
        [2, 1297, "肖申克的救赎", "蒂姆·罗宾斯|摩根·弗里曼|鲍勃·冈顿", "1994-09-10(加拿大)", 9.5, "https://p0.meituan.net/movie/283292171619cdfd5b240c8fd093f1eb255670.jpg@160w_220h_1e_1c"],
        [3, 2641, "罗马假日", "格利高里·派克|奥黛丽·赫本|埃迪·艾伯特", "1953-09-02(美国)", 9.1, "https://p0.meituan.net/movie/289f98ceaa8a0ae737d3dc01cd05ab052213631.jpg@160w_220h_1e_1c"],
        [4, 4055, "这个杀手不太冷", "让·雷诺|加里·奥德曼|娜塔莉·波特曼", "1994-09-14(法国)", 9.5, "https://p1.meituan.net/movie/6bea9af4524dfbd0b668eaa7e187c3df767253.jpg@160w_220h_1e_1c"],
        [5, 267, "泰坦尼克号", "莱昂纳多·迪卡普里奥|凯特·温丝莱特|比利·赞恩", "1998-04-03", 9.5, "https://p1.meituan.net/movie/b607fba7513e7f15eab170aac1e1400d878112.jpg@160w_220h_1e_1c"],
        [6, 837, "唐伯虎点秋香", "周星驰|巩俐|郑佩佩", "1993-07-01(中国香港)", 9.1, "https://p0.meituan.net/movie/da64660f82b98cdc1b8a3804e69609e041108.jpg@160w_220h_1e_1c"],
        [7, 2760, "魂断蓝桥", "费雯·丽|罗伯特·泰勒|露塞尔·沃特森", "1940-05-17(美国)", 9.2, "https://p0.meituan.net/movie/46c29a8b8d8424bdda7715e6fd779c66235684.jpg@160w_220h_1e_1c"],
        [8, 7431, "乱世佳人", "费雯·丽|克拉克·盖博|奥利维娅·德哈维兰", "1939-12-15(美国)", 9.1, "https://p0.meituan.net/movie/223c3e186db3ab4ea3bb14508c709400427933.jpg@160w_220h_1e_1c"],
        [9, 1228, "天空之城", "寺田农|鹫尾真知子|龟山助清", "1992", 9.1, "https://p1.meituan.net/movie/ba1ed511668402605ed369350ab779d6319397.jpg@160w_220h_1e_1c"],
        [10, 3667, "辛德勒的名单", "连姆·尼森|拉尔夫·费因斯|本·金斯利", "1993-12-15(美国)", 9.2, "https://p0.meituan.net/movie/b0d986a8bf89278afbb19f6abaef70f31206570.jpg@160w_220h_1e_1c"],
    ],
    "board4_offset0_2025-05-27_vanslee.html": [
        [1, 1200486, "我不是药神", "徐峥|王传君|周一围", "2018-07-05", 9.6, "https://p0.pipi.cn/mmdb/54ecde9a2c9f2a51ba06d67d795a9434b8421.jpg?imageView2/1/w/160/h/220"],
        [2, 1297, "肖申克的救赎", "蒂姆·罗宾斯|摩根·弗里曼|鲍勃·冈顿", "1994-09-10(加拿大)", 9.5, "https://p0.pipi.cn/mmdb/54ecde3311ef2abe12f0ee281b37b5fc0bc2b.jpg?imageView2/1/w/160/h/220"],
        [3, 1292, "海上钢琴师", "蒂姆·罗斯|比尔·努恩|克兰伦斯·威廉姆斯三世", "2019-11-15", 9.3, "https://p0.pipi.cn/mediaplus/friday_image_fe/cdf05c5cf87ea4f87bd8189dd2c5c8c208886.jpg?imageView2/1/w/160/h/220"],
        [4, 1206605, "绿皮书", "维果·莫腾森|马赫沙拉·阿里|琳达·卡德里尼", "2019-03-01", 9.5, "https://p0.pipi.cn/mmdb/d2dad59253751b230f21f0818a5bfd4d8679c.jpg?imageView2/1/w/160/h/220"],
        [5, 1203, "霸王别姬", "张国荣|张丰毅|巩俐", "1993-07-26", 9.4, "https://p0.pipi.cn/mmdb/fb7386beddd338537c8ea3bb80d25a9078b13.jpg?imageView2/1/w/160/h/220"],
        [6, 1303, "美丽人生", "罗伯托·贝尼尼|朱斯蒂诺·杜拉诺|赛尔乔·比尼·布斯特里克", "2020-01-03", 9.3, "https://p0.pipi.cn/mmdb/d2dad592c7e7e1d2367a3507befaed31a5903.jpg?imageView2/1/w/160/h/220"],
        [7, 4055, "这个杀手不太冷", "让·雷诺|娜塔莉·波特曼|加里·奥德曼", "2024-11-01", 9.6, "https://p0.pipi.cn/mmdb/54ecde92339923b12d807750dae3398ce9cce.jpg?imageView2/1/w/160/h/220"],
        [8, 78341, "星际穿越", "马修·麦康纳|安妮·海瑟薇|杰西卡·查斯坦", "2014-11-12", 9.3, "https://p0.pipi.cn/mmdb/d2dad592b125bfc9fd300b8a46169f8008efb.jpg?imageView2/1/w/160/h/220"],
        [9, 416, "盗梦空间", "莱昂纳多·迪卡普里奥|渡边谦|约瑟夫·高登-莱维特", "2010-09-01", 9.0, "https://p0.pipi.cn/mmdb/fb7386510fa2ffd7c3e19bcb2e6ea4dc44460.jpg?imageView2/1/w/160/h/220"],
        [10, 267, "泰坦尼克号", "莱昂纳多·迪卡普里奥|凯特·温丝莱特|比利·赞恩", "1998-04-03", 9.6, "https://p0.pipi.cn/mmdb/fb73869af2a51b339e537c802afb40db7a7fe.jpg?imageView2/1/w/160/h/220"],
    ],
    "board4_offset90_2025-08-26_li-weil.html": [
        [91, 78538, "素媛", "李来|薛景求|严智苑", "2013-10-02(韩国)", 9.1, "https://p0.pipi.cn/mmdb/d2dad592b125bf230f8d3384ef8b5b7ad3de5.jpg?imageView2/1/w/160/h/220"],
        [92, 790, "蝙蝠侠：黑暗骑士", "克里斯蒂安·贝尔|希斯·莱杰|阿伦·伊克哈特", "2008-07-14(阿根廷)", 9.3, "https://p0.pipi.cn/mmdb/d2dad592c7e7e111e55bf165a69f4403a0815.jpg?imageView2/1/w/160/h/220"],
        [93, 2204, "两杆大烟枪", "杰森·弗莱明|德克斯特·弗莱彻|杰森·斯坦森", "1998-08-28(英国)", 8.7, "https://p0.pipi.cn/mmdb/54ecde02537ddd178967cbc55df9269f0bfee.jpg?imageView2/1/w/160/h/220"],
        [94, 14583, "傲慢与偏见", "马修·麦克费登|吉娜·马隆|妲露拉·莱莉", "2008-02-10", 8.4, "https://p0.pipi.cn/mmdb/d2dad592b1251b2ff7be12b77068890525bd4.jpg?imageView2/1/w/160/h/220"],
        [95, 1443924, "奥本海默", "基里安·墨菲|艾米莉·布朗特|马特·达蒙", "2023-08-30", 9.3, "https://p0.pipi.cn/mmdb/54ecde8d537923be127a35edaa7ed1b006af8.jpg?imageView2/1/w/160/h/220"],
        [96, 1202, "大鱼", "伊万·麦克格雷格|阿尔伯特·芬尼|杰西卡·兰格", "2003-12-04(美国)", 8.6, "https://p0.pipi.cn/mmdb/d2dad592c7e7e1d236d7c316db75fd5d48d41.jpg?imageView2/1/w/160/h/220"],
        [97, 20131, "致命魔术", "休·杰克曼|克里斯蒂安·贝尔|迈克尔·凯恩", "2006-10-17(意大利)", 8.8, "https://p0.pipi.cn/mmdb/d2dad592b1251b06d6395bef1abdc4f5361f4.jpg?imageView2/1/w/160/h/220"],
        [98, 907, "禁闭岛", "莱昂纳多·迪卡普里奥|马克·鲁法洛|本·金斯利", "2010-02-13(德国)", 8.7, "https://p0.pipi.cn/mmdb/d2dad592c7e7e111e5e19b6ea329f546d4160.jpg?imageView2/1/w/160/h/220"],
        [99, 1379, "真爱至上", "休·格兰特|比尔·奈伊|连姆·尼森", "2003-11-21(英国)", 8.6, "https://p0.pipi.cn/mmdb/d2dad592c7e7e1d23616bd136d7b8bd905e71.jpg?imageView2/1/w/160/h/220"],
        [100, 78646, "模仿游戏", "本尼迪克特·康伯巴奇|凯拉·奈特莉|马修·古迪", "2015-07-21", 9.3, "https://p0.pipi.cn/mmdb/d2dad592b125bf313906d638156e7821539c4.jpg?imageView2/1/w/160/h/220"],
    ],
}


def fixture_text(name: str) -> str:
    return (FIXTURES / "maoyan" / name).read_text("utf-8")


def as_row(film: dict) -> list:
    return [film["index"], film["movie_id"], film["title"], "|".join(film["actors"]), film["release_time"], film["score"], film["image"]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_board_pages_parse_exactly(name: str) -> None:
    page = Selector(text=fixture_text(name))
    films = [parse_film(dd) for dd in board_entries(page)]
    assert [as_row(dict(film)) for film in films] == EXPECTED[name]
    assert all(isinstance(f["score"], float) and isinstance(f["movie_id"], int) for f in films)


def test_tricky_values() -> None:
    films = {row[2]: row for rows in EXPECTED.values() for row in rows}
    assert films["天空之城"][4] == "1992"  # a bare year
    assert films["蝙蝠侠：黑暗骑士"][2] == "蝙蝠侠：黑暗骑士"  # full-width colon kept in titles
    assert films["海上钢琴师"][3] == "蒂姆·罗斯|比尔·努恩|克兰伦斯·威廉姆斯三世"  # stray space trimmed
    assert all("loading" not in row[6] for row in films.values())  # never the placeholder src


def test_film_without_score_or_actors() -> None:
    dd = Selector(
        text='<dl class="board-wrapper"><dd><i class="board-index board-index-3">3</i>'
        '<img data-src="http://img.test/p.jpg" class="board-img"/>'
        '<p class="name"><a href="/films/42" title="期待">期待</a></p><p class="star"></p>'
        '<p class="releasetime">上映时间：2026</p><div class="movie-item-number wish"><p class="month-wish">'
        '<span class="stonefont"></span></p></div></dd></dl>'
    ).css("dl.board-wrapper > dd")[0]
    assert dict(parse_film(dd)) == {
        "index": 3, "movie_id": 42, "title": "期待", "actors": [], "release_time": "2026", "score": None,
        "image": "http://img.test/p.jpg",
    }  # fmt: skip
    assert movie_id_from_href("https://www.maoyan.com/films/1203") == 1203
    assert movie_id_from_href("/board/4") is None


def _response(url: str, body: str) -> HtmlResponse:
    return HtmlResponse(url, body=body.encode(), encoding="utf-8", request=Request(url))


def test_blocked_pages_are_recognised() -> None:
    assert blocked_reason(_response(VERIFY_URL, VERIFY_PAGE)) == "redirected to verify.maoyan.com"
    assert blocked_reason(_response(BOARD, VERIFY_PAGE)).startswith("verification page")
    assert blocked_reason(_response(BOARD, NO_BOARD_PAGE)) == "no board on the page"
    assert blocked_reason(_response(BOARD, fixture_text("board4_offset0_2019-05-23_shiqinying.html"))) is None


def shifted_page(offset: int) -> str:
    """The 2025 offset-0 page with its ranks moved to ``offset + 1 .. offset + 10`` (test data, not parsing)."""
    text = fixture_text("board4_offset0_2025-05-27_vanslee.html")
    return re.sub(
        r'board-index board-index-(\d+)">(\d+)<',
        lambda m: f'board-index board-index-{int(m[1]) + offset}">{int(m[2]) + offset}<',
        text,
    )


def serve_board(web: FakeWeb, skip: tuple[int, ...] = ()) -> None:
    """Offsets 0 and 90 are the real pages; 10..80 the 2025 page with shifted ranks."""
    for offset in range(0, 100, 10):
        if offset in skip:
            continue
        if offset == 0:
            body = fixture_text("board4_offset0_2019-05-23_shiqinying.html")
        elif offset == 90:
            body = fixture_text("board4_offset90_2025-08-26_li-weil.html")
        else:
            body = shifted_page(offset)
        web.add(f"{BOARD}?offset={offset}", body, content_type="text/html; charset=utf-8")


@pytest.fixture
def web(serve) -> FakeWeb:
    return serve(FakeWeb())


@pytest.mark.slow
def test_whole_board_one_item_per_film_and_rerun_adds_nothing(tmp_path: Path, web: FakeWeb) -> None:
    serve_board(web)
    result = run_crawl("maoyan", tmp_path, web, args={"board_url": BOARD})
    assert result.returncode == 0, result.log[-3000:]
    films = {film["index"]: film for film in result.items}
    assert sorted(films) == list(range(1, 101)) and len(result.items) == 100
    assert [as_row(films[i]) for i in range(1, 11)] == EXPECTED["board4_offset0_2019-05-23_shiqinying.html"]
    assert [as_row(films[i]) for i in range(91, 101)] == EXPECTED["board4_offset90_2025-08-26_li-weil.html"]
    assert films[11]["title"] == "我不是药神"
    assert result.stats["maoyan/pages"] == 10 and "maoyan/blocked" not in result.stats
    headers = web.request_headers[web.hits.index(("www.maoyan.com", "/board/4?offset=0"))]
    assert "Chrome/" in headers["User-Agent"] and headers["Accept-Language"].startswith("zh-CN")
    assert headers["Accept"].startswith("text/html")

    # a plain run is a new crawl, which replaces the output; appending instead, the films'
    # dedupe_key (index) keeps the re-run from writing any film twice
    again = run_crawl("maoyan", tmp_path, web, args={"board_url": BOARD}, settings={"FLEET_OUTPUT_APPEND": True})
    assert len(again.items) == 100, "a re-run writes no film twice"
    assert again.stats["fleet/output/duplicates_dropped"] == 100


@pytest.mark.slow
def test_verify_redirect_is_retried_with_backoff_then_parsed(tmp_path: Path, web: FakeWeb) -> None:
    serve_board(web, skip=(50,))
    web.sequence(
        f"{BOARD}?offset=50",
        (302, "", {"Location": VERIFY_URL}),
        (200, VERIFY_PAGE, {}),
        (200, shifted_page(50), {}),
    )
    web.add(VERIFY_URL, VERIFY_PAGE, content_type="text/html; charset=utf-8")
    result = run_crawl("maoyan", tmp_path, web, args={"board_url": BOARD, "blocked_retries": "3", "blocked_backoff": "0.01"})
    assert result.returncode == 0, result.log[-3000:]
    assert sorted(film["index"] for film in result.items) == list(range(1, 101))
    assert result.stats["maoyan/blocked"] == 2 and "maoyan/gave_up" not in result.stats
    assert web.count(f"{BOARD}?offset=50") == 3
    assert f"ERROR: Blocked by Maoyan at {BOARD}?offset=50 (landed on {VERIFY_URL}): redirected to verify.maoyan.com" in result.log


@pytest.mark.slow
def test_pages_that_stay_blocked_give_up_loudly(tmp_path: Path, web: FakeWeb) -> None:
    serve_board(web, skip=(30, 40, 60, 70))
    web.redirect(f"{BOARD}?offset=30", VERIFY_URL)  # the same verify URL each time: retries must bypass the dupefilter
    web.add(VERIFY_URL, VERIFY_PAGE, content_type="text/html; charset=utf-8")
    web.add(f"{BOARD}?offset=40", NO_BOARD_PAGE, content_type="text/html; charset=utf-8")  # 200, empty board
    web.add(f"{BOARD}?offset=60", VERIFY_PAGE, content_type="text/html; charset=utf-8")  # verify page without redirect
    web.add(f"{BOARD}?offset=70", "Forbidden", status=403)
    result = run_crawl("maoyan", tmp_path, web, args={"board_url": BOARD, "blocked_retries": "2", "blocked_backoff": "0.01"})
    assert result.returncode == 0, result.log[-3000:]
    assert len(result.items) == 60
    assert not {31, 41, 61, 71} & {film["index"] for film in result.items}
    assert result.stats["maoyan/blocked"] == 4 * 3 and result.stats["maoyan/gave_up"] == 4
    for offset in (30, 40, 60, 70):
        assert web.count(f"{BOARD}?offset={offset}") == 3
        assert re.search(rf"ERROR: Blocked by Maoyan at {re.escape(BOARD)}\?offset={offset}\b.*gave up after 2 retries", result.log)
    assert "no board on the page" in result.log and "HTTP 403" in result.log


@pytest.mark.slow
def test_other_failures_are_logged_errors(tmp_path: Path, web: FakeWeb) -> None:
    serve_board(web, skip=(20,))  # offset 20 answers 404
    result = run_crawl("maoyan", tmp_path, web, args={"board_url": BOARD})
    assert len(result.items) == 90
    assert result.stats["maoyan/errors"] == 1
    assert f"ERROR: Board page {BOARD}?offset=20 failed: HTTP 404" in result.log


@pytest.mark.slow
def test_on_the_fleet_frontier_with_a_blocked_page(tmp_path: Path, web: FakeWeb, redis_url: str, key_prefix: str) -> None:
    serve_board(web, skip=(50,))
    web.sequence(f"{BOARD}?offset=50", (302, "", {"Location": VERIFY_URL}), (200, shifted_page(50), {}))
    web.add(VERIFY_URL, VERIFY_PAGE, content_type="text/html; charset=utf-8")
    frontier = {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix}
    args = {"board_url": BOARD, "blocked_backoff": "0.01"}
    result = run_crawl("maoyan", tmp_path, web, args=args, frontier=frontier)
    assert result.returncode == 0, result.log[-3000:]
    assert "FleetScheduler" in result.log
    assert sorted(film["index"] for film in result.items) == list(range(1, 101))
    assert result.stats["maoyan/blocked"] == 1


@pytest.mark.slow
def test_scrapy_fleet_with_two_workers(tmp_path: Path, web: FakeWeb, redis_url: str, key_prefix: str) -> None:
    serve_board(web)
    frontier = {"REDIS_URL": redis_url, "FLEET_KEY_PREFIX": key_prefix}
    result = run_fleet("maoyan", tmp_path, web, 2, frontier, args={"board_url": BOARD})
    assert result.returncode == 0, result.log[-3000:]
    films = sorted(result.items, key=lambda film: film["index"])
    assert [film["index"] for film in films] == list(range(1, 101))
    assert [as_row(film) for film in films[:10]] == EXPECTED["board4_offset0_2019-05-23_shiqinying.html"]
